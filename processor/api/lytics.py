"""The Lytics v1 REST surface (lytics-api.md §2): collect, segments, subscriptions.

Every response uses the Lytics envelope ``{"status", "message", "data"}``, errors included
(``{"status": 4xx, "message": "<reason>", "data": null}``): :class:`LyticsRoute` turns any
HTTPException and request-validation error of these routes, authentication failures too, into
that shape. Auth is §2.1's: raw ``Authorization``, ``Bearer``, ``?access_token=`` or ``?key=``
(see :func:`processor.api.auth.require_token`).

Definitions are stored through :mod:`processor.publishing` (validation, INCLUDE and cycle
checks); this module only adds the Lytics shapes, id-or-slug lookup and creation/update times
(kept beside the registry, ``keys.registry_meta``).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from redis.asyncio import Redis

from processor.api.auth import require_token
from processor.api.collector import event_producer
from processor.api.limits import read_body
from processor.domain.events import EventDecodeError, decode_generic_json
from processor.domain.segments import SegmentDefinition
from processor.errors import DefinitionError
from processor.publishing import publish_segment, publish_subscription
from processor.segmentql import SegmentQLError, included_segments, parse, to_ast_json
from processor.state import keys
from processor.state.registry import Registry
from processor.streams.producing import event_key
from processor.streams.routing import STREAM_HEADER, TIMESTAMP_FIELD_HEADER

SEGMENTS, SUBSCRIPTIONS = "segments", "subscriptions"
STREAM_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_SEGMENT_FIELDS = ("name", "slug_name", "segment_ql", "description", "tags", "is_public")


class LyticsRoute(APIRoute):
    """An APIRoute whose errors come out in the Lytics envelope."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def envelope_errors(request: Request) -> Response:
            try:
                return await handler(request)
            except HTTPException as exc:
                return JSONResponse(envelope(None, exc.status_code, str(exc.detail)),
                                    status_code=exc.status_code, headers=exc.headers)
            except RequestValidationError as exc:
                reason = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                return JSONResponse(envelope(None, 400, reason), status_code=400)

        return envelope_errors


router = APIRouter(route_class=LyticsRoute, dependencies=[Depends(require_token)])


def envelope(data: Any, code: int = 200, message: str = "success") -> dict[str, Any]:
    return {"status": code, "message": message, "data": data}


def _registry(request: Request) -> Registry:
    return Registry(request.app.state.redis)


def _text_body(description: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "description": description,
                            "content": {"text/plain": {"schema": {"type": "string"}}}}}


def _json_body(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "description": description,
                            "content": {"application/json": {"schema": schema}}}}


async def _json(request: Request) -> Any:
    try:
        return orjson.loads(await read_body(request))
    except orjson.JSONDecodeError as exc:
        raise HTTPException(400, f"body is not valid JSON: {exc}") from None


# -- collect ------------------------------------------------------------------------------


@router.post("/collect/json/{stream}", openapi_extra=_json_body(
    "one event object or an array of them", {"oneOf": [{"type": "object"}, {"type": "array"}]}))
async def collect_json(request: Request, stream: str, timestamp_field: str | None = None,
                       dryrun: bool = False, filename: str | None = None) -> dict[str, Any]:
    """Lytics ``/collect/json/{stream}`` (§2.4). Each object is checked as the worker will
    decode it; bad ones are counted in ``rejected_count`` and not produced. The rest go to the
    events topic with header ``stream=<stream>`` (and ``timestamp_field`` when given), after
    Kafka acknowledged them. ``dryrun`` checks without producing."""
    if not STREAM_NAME.match(stream):
        raise HTTPException(400, "stream names hold 1-128 letters, digits, '_', '.', '-'")
    body = await _json(request)
    items = body if isinstance(body, list) else [body]
    if not isinstance(body, list | dict):
        raise HTTPException(400, "body must be a JSON object or an array of objects")
    settings = request.app.state.settings
    now_ms = time.time_ns() // 1_000_000
    accepted: list[tuple[bytes | None, bytes]] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        raw = orjson.dumps(item)
        try:
            decode_generic_json(raw, stream=stream, timestamp_field=timestamp_field or "ts",
                                now_ms=now_ms, max_bytes=settings.max_event_bytes)
        except EventDecodeError:
            continue
        accepted.append((event_key(raw), raw))
    if accepted and not dryrun:
        headers = [(STREAM_HEADER, stream.encode())]
        if timestamp_field:
            headers.append((TIMESTAMP_FIELD_HEADER, timestamp_field.encode()))
        await event_producer(request).send(accepted, headers)
    return envelope({
        "message_count": len(accepted), "rejected_count": len(items) - len(accepted),
        "content-type": "application/json", "droperrors": False, "dryrun": dryrun,
        "timestamp_field": timestamp_field or "", "filename": filename or "",
    })


# -- metadata (created / updated) --------------------------------------------------------


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def _meta(redis: Redis, kind: str, item_id: str) -> dict[str, Any]:
    raw = await redis.hget(keys.registry_meta(kind), item_id)
    return {} if raw is None else orjson.loads(raw)


async def _touch(redis: Redis, kind: str, item_id: str, **extra: Any) -> dict[str, Any]:
    meta = await _meta(redis, kind, item_id)
    now = _now_iso()
    meta = {**meta, "created": meta.get("created") or now, "updated": now, **extra}
    await redis.hset(keys.registry_meta(kind), item_id, orjson.dumps(meta))
    return meta


# -- segments ------------------------------------------------------------------------------


def segment_view(segment: SegmentDefinition, meta: dict[str, Any]) -> dict[str, Any]:
    """The Lytics segment object (§2.2) of a stored segment."""
    try:
        ast, invalid, reason = to_ast_json(parse(segment.segment_ql)), False, ""
    except SegmentQLError as exc:  # stored before a parser change; shown, not hidden
        ast, invalid, reason = None, True, str(exc)
    return {
        "id": segment.id, "account_id": "", "aid": 0, "name": segment.name,
        "slug_name": segment.slug_name, "description": segment.description, "kind": "segment",
        "table": "user", "is_public": bool(meta.get("is_public", False)),
        "segment_ql": segment.segment_ql, "ast": ast, "author_id": "",
        "created": meta.get("created"), "updated": meta.get("updated"),
        "tags": list(segment.tags), "invalid": invalid, "invalid_reason": reason,
        "attribute_key": segment.attribute_key,
    }


async def _all_segments(registry: Registry) -> list[SegmentDefinition]:
    return [SegmentDefinition.model_validate(d) for d in (await registry.all(SEGMENTS)).values()]


async def find_segment(registry: Registry, id_or_slug: str) -> SegmentDefinition | None:
    doc = await registry.get(SEGMENTS, id_or_slug)
    if doc is not None:
        return SegmentDefinition.model_validate(doc)
    return next((s for s in await _all_segments(registry) if s.slug_name == id_or_slug), None)


async def _segment_or_404(registry: Registry, id_or_slug: str) -> SegmentDefinition:
    segment = await find_segment(registry, id_or_slug)
    if segment is None:
        raise HTTPException(404, f"segment {id_or_slug!r} not found")
    return segment


async def _store_segment(request: Request, doc: dict[str, Any]) -> tuple[SegmentDefinition, bool]:
    registry = _registry(request)
    is_public = doc.pop("is_public", None)
    try:
        segment = await publish_segment(registry, doc)
    except DefinitionError as exc:
        raise HTTPException(400, str(exc)) from None
    redis = request.app.state.redis
    created = not (await _meta(redis, SEGMENTS, segment.id))
    extra = {} if is_public is None else {"is_public": bool(is_public)}
    await _touch(redis, SEGMENTS, segment.id, **extra)
    return segment, created


@router.post("/api/segment", status_code=201, openapi_extra={"requestBody": {
    "required": True, "content": {
        "text/plain": {"schema": {"type": "string"}},
        "application/json": {"schema": {"type": "object", "properties": {
            "name": {"type": "string"}, "segment_ql": {"type": "string"},
            "slug_name": {"type": "string"}, "description": {"type": "string"},
            "is_public": {"type": "boolean"}, "tags": {"type": "array", "items": {"type": "string"}},
        }, "required": ["segment_ql"]}}}}})
async def create_segment(request: Request, response: Response) -> dict[str, Any]:
    """Upsert a segment: text/plain SegmentQL (keyed by its ALIAS) or a JSON segment object."""
    if request.headers.get("content-type", "").startswith("application/json"):
        body = await _json(request)
        if not isinstance(body, dict):
            raise HTTPException(400, "body must be a JSON object")
        doc = {k: body[k] for k in _SEGMENT_FIELDS if k in body}
    else:
        doc = {"segment_ql": (await read_body(request)).decode("utf-8", errors="replace")}
    segment, created = await _store_segment(request, doc)
    response.status_code = 201 if created else 200
    return envelope(segment_view(segment, await _meta(request.app.state.redis, SEGMENTS, segment.id)))


@router.get("/api/segment")
async def list_segments(request: Request, table: str = "user") -> dict[str, Any]:
    if table != "user":
        return envelope([])
    redis = request.app.state.redis
    segments = sorted(await _all_segments(_registry(request)), key=lambda s: s.slug_name)
    return envelope([segment_view(s, await _meta(redis, SEGMENTS, s.id)) for s in segments])


@router.post("/api/segment/validate", openapi_extra=_text_body("SegmentQL to check"))
async def validate_segment(request: Request) -> dict[str, Any]:
    """Parse only: 200 with ``data: null``, or 400 with the parser's line/column message."""
    text = (await read_body(request)).decode("utf-8", errors="replace")
    try:
        parse(text)
    except SegmentQLError as exc:
        raise HTTPException(400, f"Failed parsing segment QL: {exc}") from None
    return envelope(None)


@router.get("/api/segment/{segment_id}")
async def get_segment(request: Request, segment_id: str) -> dict[str, Any]:
    segment = await _segment_or_404(_registry(request), segment_id)
    return envelope(segment_view(segment, await _meta(request.app.state.redis, SEGMENTS, segment.id)))


@router.put("/api/segment/{segment_id}", openapi_extra=_json_body(
    "fields to change", {"type": "object"}))
async def update_segment(request: Request, segment_id: str) -> dict[str, Any]:
    """Change fields of a segment; its id stays (a new ``slug_name`` does not re-key it)."""
    segment = await _segment_or_404(_registry(request), segment_id)
    body = await _json(request)
    if not isinstance(body, dict):
        raise HTTPException(400, "body must be a JSON object")
    doc = segment.model_dump(mode="json") | {k: body[k] for k in _SEGMENT_FIELDS if k in body}
    updated, _ = await _store_segment(request, doc)
    return envelope(segment_view(updated, await _meta(request.app.state.redis, SEGMENTS, updated.id)))


@router.delete("/api/segment/{segment_id}", status_code=204, response_class=Response)
async def delete_segment(request: Request, segment_id: str) -> Response:
    """204; 409 while another segment INCLUDEs it or a subscription delivers it."""
    registry = _registry(request)
    segment = await _segment_or_404(registry, segment_id)
    for other in await _all_segments(registry):
        if other.id != segment.id and included_segments(parse(other.segment_ql)) & {
            segment.id, segment.slug_name}:
            raise HTTPException(409, f"segment {other.slug_name!r} INCLUDEs {segment.slug_name!r}")
    for sub in (await registry.all(SUBSCRIPTIONS)).values():
        if set(sub.get("segment_ids") or ()) & {segment.id, segment.slug_name}:
            raise HTTPException(409, f"subscription {sub['id']!r} delivers {segment.slug_name!r}")
    await registry.delete(SEGMENTS, segment.id)
    await request.app.state.redis.hdel(keys.registry_meta(SEGMENTS), segment.id)
    return Response(status_code=204)


# -- subscriptions -------------------------------------------------------------------------


def subscription_view(doc: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """The Lytics subscription object (§2.3): the stored fields plus Lytics bookkeeping."""
    return {**doc, "created": meta.get("created"), "updated": meta.get("updated"),
            "user_id": "", "account_id": "", "workflow": "webhook_triggers"}


async def _subscription_doc(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    """Resolve ``segmentql`` (publish it) and ``segment_ids`` (ids or slugs -> ids)."""
    registry = _registry(request)
    doc = {**body, "id": str(body.get("id") or uuid.uuid4().hex)}
    ids = body.get("segment_ids") or []
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise HTTPException(400, "segment_ids must be a list of segment ids")
    resolved: list[str] = []
    for given in ids:
        segment = await find_segment(registry, given)
        if segment is None:
            raise HTTPException(400, f"segment_ids: no segment {given!r}")
        resolved.append(segment.id)
    ql = body.get("segmentql")
    if isinstance(ql, str) and ql.strip():
        inline, _ = await _store_segment(request, {"segment_ql": ql})
        resolved.append(inline.id)
    doc["segment_ids"] = list(dict.fromkeys(resolved))
    existing = await registry.get(SUBSCRIPTIONS, doc["id"])
    if existing and not body.get("signing_secret"):
        # An upsert must not rotate the secret receivers verify with.
        doc["signing_secret"] = existing.get("signing_secret")
    return doc


@router.post("/api/subscription", openapi_extra=_json_body("subscription (upsert by id)", {
    "type": "object", "properties": {
        "id": {"type": "string"}, "name": {"type": "string"}, "channel": {"type": "string"},
        "segment_ids": {"type": "array", "items": {"type": "string"}},
        "segmentql": {"type": "string"}, "webhook_url": {"type": "string"},
        "withbackfill": {"type": "boolean"}}, "required": ["channel"]}))
async def upsert_subscription(request: Request) -> dict[str, Any]:
    body = await _json(request)
    if not isinstance(body, dict):
        raise HTTPException(400, "body must be a JSON object")
    doc = await _subscription_doc(request, body)
    try:
        subscription = await publish_subscription(_registry(request), doc)
    except DefinitionError as exc:
        raise HTTPException(400, str(exc)) from None
    meta = await _touch(request.app.state.redis, SUBSCRIPTIONS, subscription.id)
    return envelope(subscription_view(subscription.model_dump(mode="json", exclude_none=True), meta))


@router.get("/api/subscription")
async def list_subscriptions(request: Request, segment_id: str | None = None,
                             table: str = "user") -> dict[str, Any]:
    """All subscriptions, or those delivering ``segment_id`` (an id or a slug)."""
    registry = _registry(request)
    docs = sorted((await registry.all(SUBSCRIPTIONS)).values(), key=lambda d: str(d.get("id")))
    if table != "user":
        docs = []
    if segment_id is not None:
        segment = await find_segment(registry, segment_id)
        wanted = {segment_id} | ({segment.id, segment.slug_name} if segment else set())
        docs = [d for d in docs if wanted & set(d.get("segment_ids") or ())]
    redis = request.app.state.redis
    return envelope([subscription_view(d, await _meta(redis, SUBSCRIPTIONS, d["id"])) for d in docs])


@router.get("/api/subscription/{subscription_id}")
async def get_subscription(request: Request, subscription_id: str) -> dict[str, Any]:
    doc = await _registry(request).get(SUBSCRIPTIONS, subscription_id)
    if doc is None:
        raise HTTPException(404, f"subscription {subscription_id!r} not found")
    meta = await _meta(request.app.state.redis, SUBSCRIPTIONS, subscription_id)
    return envelope(subscription_view(doc, meta))


@router.delete("/api/subscription/{subscription_id}", status_code=204, response_class=Response)
async def delete_subscription(request: Request, subscription_id: str) -> Response:
    if not await _registry(request).delete(SUBSCRIPTIONS, subscription_id):
        raise HTTPException(404, f"subscription {subscription_id!r} not found")
    await request.app.state.redis.hdel(keys.registry_meta(SUBSCRIPTIONS), subscription_id)
    return Response(status_code=204)
