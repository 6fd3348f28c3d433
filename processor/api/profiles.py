"""Profiles Store reads: online attributes (signals-api §1.7) and event logs (§1.9).

``POST /api/v1/get-online-attributes`` answers column -> list (one element per identifier,
request order), the key column echoing the identifiers; never a bare null. Errors: a group
version that is unknown or not published, or an attribute it lacks -> 422
``{"detail": {"missing": [qualified names]}}`` (the Node SDK's expectation); an unknown service
-> 404; bad identifiers (none, more than 100 per key) -> 422.

The read is the API's hot path, so it costs one Redis round trip and little Python. Published
definitions are held per process in a :class:`_Snapshot` of one registry version, together with
the compiled read of each request shape (columns, keys, naming) seen under it. Every read
fetches the registry version in the same round trip as the values (``reads.read_columns``);
when it moved, the snapshot is reloaded and the values read again. So a read that follows a
publish, from this process or any other, always sees it, and a steady read costs no extra
round trip. An error found with the snapshot (say, a group that is not published) is
confirmed against the current version before it is returned.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import orjson
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import PlainTextResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import State

from processor.api.auth import require_token
from processor.api.limits import read_body
from processor.api.signals_errors import translated
from processor.domain.definitions import AttributeGroup, EventLog, Service
from processor.publishing import SignalsCatalog
from processor.state import reads
from processor.state.registry import Registry

router = APIRouter(prefix="/api/v1")
PATH = "/get-online-attributes"

QUALIFIED = re.compile(r"^([A-Za-z0-9_]+)_v([0-9]+):([A-Za-z0-9_]+)$")
MAX_IDS = 100
_PLANS_MAX = 1024  # request shapes remembered per registry version


class OnlineAttributesRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    attribute_keys: dict[str, list[str]] = Field(min_length=1, max_length=100)
    attributes: list[str] | str | None = None
    service: str | None = None
    full_attribute_names: bool = False


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to answer one request shape under one snapshot: per requested attribute key, the
    compiled reads of the columns it serves and their response names, in response order."""

    reads: dict[str, tuple[tuple[reads.ColumnRead, tuple[str, ...]], ...]]


@dataclass(frozen=True)
class _Snapshot:
    version: int
    groups: dict[tuple[str, int], AttributeGroup]
    services: dict[str, Service]
    plans: dict[tuple[Any, ...], _Plan] = field(default_factory=dict)


async def _load(state: State) -> _Snapshot:
    """Published definitions as of the current registry version, cached for this process."""
    registry = Registry(state.redis)
    version = await registry.version()  # first: a change while loading is seen by the next read
    catalog = SignalsCatalog(registry)
    snapshot = _Snapshot(
        version,
        {(g.name, g.version): g for g in await catalog.groups()},
        {s.name: s for s in await catalog.services()},
    )
    state.signals_read_snapshot = snapshot
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


def _parse(raw: bytes) -> OnlineAttributesRequest:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise HTTPException(422, "the request body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise HTTPException(422, "the request body must be a JSON object")
    common = _common_request(doc)
    if common is not None:
        return common
    try:
        body = OnlineAttributesRequest.model_validate(doc)
    except ValidationError as exc:
        raise HTTPException(422, exc.errors(include_url=False, include_context=False)) from None
    for key, ids in body.attribute_keys.items():
        if not 1 <= len(ids) <= MAX_IDS:
            raise HTTPException(422, f"attribute_keys.{key}: between 1 and {MAX_IDS} identifiers")
    if (body.attributes is None) == (body.service is None):
        raise HTTPException(422, "give either attributes or service")
    return body


_STRINGS = {str}


def _common_request(doc: dict[str, Any]) -> OnlineAttributesRequest | None:
    """The request of ``doc`` when it has the shape clients send (plain JSON types, nothing
    to coerce, every check passed), built without running the model's validators; None for
    anything else, which :func:`_parse` validates in full, so its 422 bodies are unchanged."""
    attribute_keys = doc.get("attribute_keys")
    attributes = doc.get("attributes")
    service = doc.get("service")
    full = doc.get("full_attribute_names", False)
    if (type(attribute_keys) is not dict or not 1 <= len(attribute_keys) <= 100
            or (full is not True and full is not False)):  # fmt: skip
        return None
    for ids in attribute_keys.values():
        if type(ids) is not list or not 1 <= len(ids) <= MAX_IDS or set(map(type, ids)) != _STRINGS:
            return None
    if service is None:
        if type(attributes) is list:
            if set(map(type, attributes)) != _STRINGS:
                return None
        elif type(attributes) is not str:
            return None
    elif type(service) is not str or attributes is not None:
        return None
    return OnlineAttributesRequest.model_construct(
        attribute_keys=attribute_keys, attributes=attributes, service=service,
        full_attribute_names=full)  # fmt: skip


def _shape(body: OnlineAttributesRequest) -> tuple[Any, ...]:
    """What the plan of a request depends on: everything but the identifiers."""
    wanted = body.attributes if body.service is None else None
    columns = ("service", body.service) if wanted is None else (
        "attributes", (wanted,) if isinstance(wanted, str) else tuple(wanted))
    return columns, tuple(body.attribute_keys), body.full_attribute_names


def _plan(body: OnlineAttributesRequest, snapshot: _Snapshot) -> _Plan:
    """The request's plan under ``snapshot`` (compiled once per request shape), or the
    HTTPException the request gets under it."""
    shape = _shape(body)
    plan = snapshot.plans.get(shape)
    if plan is not None:
        return plan
    if body.service is not None:
        columns = _columns_for_service(body.service, snapshot)
    else:
        names = [body.attributes] if isinstance(body.attributes, str) else list(body.attributes or [])
        columns = _columns_for_attributes(names, snapshot)
    plan_reads: dict[str, tuple[tuple[reads.ColumnRead, tuple[str, ...]], ...]] = {}
    served: set[str] = set()
    for key in body.attribute_keys:
        by_entity_key: dict[str, list[Column]] = {}
        for column in columns:
            if _serves(column[2], key):
                by_entity_key.setdefault(reads.entity_key(column[2]), []).append(column)
                served.add(column[1])
        plan_reads[key] = tuple(
            (reads.compile_read([(c[2], [c[3]]) for c in mine], entity_key),
             tuple(c[1] if body.full_attribute_names else c[0] for c in mine))
            for entity_key, mine in by_entity_key.items()
        )  # fmt: skip
    unserved = sorted({c[2].attribute_key.name for c in columns if c[1] not in served})
    if unserved and (body.attributes is not None or len(unserved) == len(columns)):
        raise HTTPException(422, f"no identifiers given for attribute key(s) {', '.join(unserved)}")
    if len(snapshot.plans) >= _PLANS_MAX:
        snapshot.plans.clear()
    plan = snapshot.plans[shape] = _Plan(plan_reads)
    return plan


async def _current_plan(state: State, body: OnlineAttributesRequest) -> tuple[_Snapshot, _Plan]:
    """The plan under the cached snapshot, or under a fresh one when the cached one would
    refuse the request but the registry has moved since (it may have just been published)."""
    snapshot: _Snapshot | None = getattr(state, "signals_read_snapshot", None)
    if snapshot is None:
        snapshot = await _load(state)
    try:
        return snapshot, _plan(body, snapshot)
    except HTTPException:
        if await Registry(state.redis).version() == snapshot.version:
            raise
    snapshot = await _load(state)
    return snapshot, _plan(body, snapshot)


class _RequestResponseRoute(APIRoute):
    """A route whose endpoint takes the ``Request`` and returns the ``Response`` itself.
    FastAPI documents it and turns its ``HTTPException`` into the usual JSON error like any
    route, but does not solve dependencies or parse parameters for it on each request (a
    tenth of the hot read's server time): the endpoint authenticates and parses by itself."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return cast(Callable[[Request], Coroutine[Any, Any, Response]], self.endpoint)


async def get_online_attributes(request: Request) -> Response:
    await require_token(request)
    state = request.app.state
    raw = await read_body(request, state.settings.api_max_body_bytes)
    return Response(await online_attributes(state, raw), media_type="application/json")


router.add_api_route(PATH, get_online_attributes, methods=["POST"],
                     route_class_override=_RequestResponseRoute)  # fmt: skip


async def online_attributes(state: State, raw: bytes) -> bytes:
    """The JSON answer to the read of body ``raw``, for an authenticated caller of the app
    whose state is ``state``; or the ``HTTPException`` it gets."""
    body = _parse(raw)
    connections = state.read_connections
    snapshot, plan = await _current_plan(state, body)
    items = list(body.attribute_keys.items())
    now_ms = time.time_ns() // 1_000_000
    batch = [(read, ids) for key, ids in items for read, _ in plan.reads[key]]
    version, values = await reads.read_columns(connections, batch, now_ms)
    if version != snapshot.version:
        # Definitions changed: answer with the ones read now (any publish that finished
        # before this request is in them), not with the cached ones.
        snapshot = await _load(state)
        plan = _plan(body, snapshot)
        batch = [(read, ids) for key, ids in items for read, _ in plan.reads[key]]
        _, values = await reads.read_columns(connections, batch, now_ms)
    out: dict[str, list[Any]] = {}
    at = 0
    for key, ids in items:
        out[key] = list(ids)
        for _, names in plan.reads[key]:
            out.update(zip(names, values[at], strict=True))
            at += 1
    return orjson.dumps(out)


@router.get("/event_log", dependencies=[Depends(require_token)])
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
