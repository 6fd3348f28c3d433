"""Profiles Store reads: online attributes (signals-api §1.7) and event logs (§1.9).

``POST /api/v1/get-online-attributes`` answers column -> list (one element per identifier,
request order), the key column echoing the identifiers; never a bare null. Errors: a group
version that is unknown or not published, or an attribute it lacks -> 422
``{"detail": {"missing": [qualified names]}}`` (the Node SDK's expectation); an unknown service
-> 404; bad identifiers (none, more than 100 per key) -> 422.

Definitions are read from a per-process snapshot that is rebuilt when the registry version
moves (one GET per request), so a hot read costs two Redis round trips: the version and one
pipelined HMGET for all identifiers.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from processor.api.auth import require_token
from processor.api.signals_errors import json_object, translated
from processor.domain.definitions import AttributeGroup, EventLog, Service
from processor.publishing import SignalsCatalog
from processor.state import reads
from processor.state.registry import Registry

router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_token)])

QUALIFIED = re.compile(r"^([A-Za-z0-9_]+)_v([0-9]+):([A-Za-z0-9_]+)$")
MAX_IDS = 100


class OnlineAttributesRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    attribute_keys: dict[str, list[str]] = Field(min_length=1, max_length=100)
    attributes: list[str] | str | None = None
    service: str | None = None
    full_attribute_names: bool = False


@dataclass(frozen=True)
class _Snapshot:
    version: int
    groups: dict[tuple[str, int], AttributeGroup]
    services: dict[str, Service]


async def _snapshot(request: Request) -> _Snapshot:
    """Published definitions as of the current registry version (cached per process)."""
    registry = Registry(request.app.state.redis)
    version = await registry.version()
    cached: _Snapshot | None = getattr(request.app.state, "signals_read_snapshot", None)
    if cached is not None and cached.version == version:
        return cached
    catalog = SignalsCatalog(registry)
    snapshot = _Snapshot(
        version,
        {(g.name, g.version): g for g in await catalog.groups()},
        {s.name: s for s in await catalog.services()},
    )
    request.app.state.signals_read_snapshot = snapshot
    return snapshot


# A column: (response name when bare, qualified name, group, attribute name)
Column = tuple[str, str, AttributeGroup, str]


def _columns_for_attributes(names: list[str], snapshot: _Snapshot) -> list[Column]:
    columns, missing = [], []
    for qualified in names:
        match = QUALIFIED.match(qualified)
        if match is None:
            raise HTTPException(
                422, f"attribute {qualified!r} is not qualified as group_vN:attribute"
            )
        group = snapshot.groups.get((match[1], int(match[2])))
        if group is None or not group.is_published or match[3] not in _names(group):
            missing.append(qualified)
            continue
        columns.append((match[3], qualified, group, match[3]))
    if missing:
        raise HTTPException(422, {"missing": missing})
    return columns


def _columns_for_service(name: str, snapshot: _Snapshot) -> list[Column]:
    service = snapshot.services.get(name)
    if service is None:
        raise HTTPException(404, f"service {name} not found")
    if not service.is_published:
        raise HTTPException(422, f"service {name} is not published")
    columns, missing = [], []
    for link in service.attribute_groups:
        group = snapshot.groups.get((link.name, link.version))
        if group is None or not group.is_published:
            missing.append(f"{link.name}_v{link.version}")
            continue
        columns += [(a, f"{group.qualified_prefix}:{a}", group, a) for a in _names(group)]
    if missing:
        raise HTTPException(422, {"missing": missing})
    return columns


def _json(body: dict[str, Any]) -> Response:
    # orjson directly: the read path is latency-bound and the body is plain JSON data.
    return Response(orjson.dumps(body), media_type="application/json")


def _names(group: AttributeGroup) -> list[str]:
    return [a.name for a in group.attributes or ()] + [f.name for f in group.fields or ()]


def _serves(group: AttributeGroup, key: str) -> bool:
    return key in (group.attribute_key.name, reads.entity_key(group))


async def _parse(request: Request) -> OnlineAttributesRequest:
    try:
        body = OnlineAttributesRequest.model_validate(await json_object(request))
    except ValidationError as exc:
        raise HTTPException(422, exc.errors(include_url=False, include_context=False)) from None
    for key, ids in body.attribute_keys.items():
        if not 1 <= len(ids) <= MAX_IDS:
            raise HTTPException(422, f"attribute_keys.{key}: between 1 and {MAX_IDS} identifiers")
    if (body.attributes is None) == (body.service is None):
        raise HTTPException(422, "give either attributes or service")
    return body


@router.post("/get-online-attributes")
async def get_online_attributes(request: Request) -> Response:
    body = await _parse(request)
    snapshot = await _snapshot(request)
    if body.service is not None:
        columns = _columns_for_service(body.service, snapshot)
    else:
        names = (
            [body.attributes] if isinstance(body.attributes, str) else list(body.attributes or [])
        )
        columns = _columns_for_attributes(names, snapshot)
    now_ms = time.time_ns() // 1_000_000
    out: dict[str, list[Any]] = {}
    served: set[str] = set()
    for key, ids in body.attribute_keys.items():
        out[key] = list(ids)
        by_entity_key: dict[str, list[Column]] = {}
        for column in columns:
            if _serves(column[2], key):
                by_entity_key.setdefault(reads.entity_key(column[2]), []).append(column)
                served.add(column[1])
        for entity_key, mine in by_entity_key.items():
            values = await reads.read_attributes(
                request.app.state.redis, [(c[2], [c[3]]) for c in mine], entity_key, ids, now_ms
            )
            for column, column_values in zip(mine, values, strict=True):
                out[column[1] if body.full_attribute_names else column[0]] = column_values
    unserved = sorted({c[2].attribute_key.name for c in columns if c[1] not in served})
    if unserved and (body.attributes is not None or len(unserved) == len(columns)):
        raise HTTPException(422, f"no identifiers given for attribute key(s) {', '.join(unserved)}")
    return _json(out)


@router.get("/event_log")
async def get_event_log(
    request: Request, name: str, identifier: str, format: Literal["json", "narrative"] = "json"
) -> Response:
    """The agentic context of one session: its recent selected events, oldest first, at most
    ``max_events`` and none older than ``max_age_seconds``. An unknown event log is 404; a
    session with no recorded events is an empty context (200), not an error."""
    with translated():
        doc = await SignalsCatalog(Registry(request.app.state.redis)).event_log(name)
    event_log = EventLog.model_validate(doc)
    key = event_log.attribute_key.name
    entries = await reads.read_event_log(request.app.state.redis, key, identifier, name)
    now_ms = time.time_ns() // 1_000_000
    recent = _recent(event_log, entries, now_ms)
    context = _context(event_log, key, identifier, entries, recent, now_ms)
    if format == "narrative":
        return PlainTextResponse(_narrative(context, recent))
    return _json(context)


def _recent(
    event_log: EventLog, entries: list[dict[str, Any]], now_ms: int
) -> list[dict[str, Any]]:
    cutoff = now_ms - event_log.max_age_seconds * 1000
    recent = [e for e in entries if not isinstance(e.get("ts"), int) or e["ts"] >= cutoff]
    return recent[-event_log.max_events :]


def _context(
    event_log: EventLog,
    key: str,
    identifier: str,
    entries: list[dict[str, Any]],
    recent: list[dict[str, Any]],
    now_ms: int,
) -> dict[str, Any]:
    """``EventLogBufferResponse``; the session start is the oldest entry still stored."""
    started = min((int(e["ts"]) for e in entries if isinstance(e.get("ts"), int)), default=now_ms)
    last_ts = next((e["ts"] for e in reversed(recent) if isinstance(e.get("ts"), int)), now_ms)
    summary = (
        f"{max(0, (now_ms - last_ts) // 1000)} seconds on the current page. "
        f"Session started {max(0, (now_ms - started) // 1000)} seconds ago. "
        f"Based on last {len(recent)} recorded events for the last {event_log.max_age_seconds} seconds."
    )
    body: dict[str, Any] = {
        "summary": summary,
        "attribute_key": key,
        "identifier": identifier,
        "name": event_log.name,
        "version": event_log.version,
        "started_at_ms": started,
        "events": [_projected(e) for e in recent],
    }
    if event_log.prompt is not None:
        body["prompt"] = event_log.prompt
    return body


def _projected(entry: dict[str, Any]) -> dict[str, Any]:
    properties = entry.get("properties")
    if isinstance(properties, dict):
        return properties
    return {k: v for k, v in entry.items() if k not in ("ts", "event")}


def _narrative(context: dict[str, Any], recent: list[dict[str, Any]]) -> str:
    """The LLM-ready text form: prompt, summary, then one CSV-ish row per event."""
    lines = ["[START CONTEXT]"]
    if context.get("prompt"):
        lines += [context["prompt"], ""]
    lines += [
        "## Real-time user behaviour",
        context["summary"],
        "",
        "seconds_since_start_of_session, event, url, event_context",
    ]
    started = context["started_at_ms"]
    for entry, projected in zip(recent, context["events"], strict=True):
        seconds = (entry["ts"] - started) // 1000 if isinstance(entry.get("ts"), int) else ""
        url = projected.get("page_url", "")
        rest = {k: v for k, v in projected.items() if k != "page_url"}
        extra = "; ".join(f"{k}={v}" for k, v in rest.items())
        lines.append(f"{seconds}, {entry.get('event', '')}, {url}, {extra}")
    lines.append("[END CONTEXT]")
    return "\n".join(lines) + "\n"
