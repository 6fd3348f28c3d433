"""Testing a draft attribute group: ``POST /api/v1/testing/attribute_groups/`` (signals-api §1.10).

The product runs the group over the warehouse's atomic events; here it runs over the recent
events of the live stream instead: the records of the events topic produced within ``window``
(at most ``recent.MAX_RECORDS``, read with a timeout), decoded with the worker's rules and
folded through the pure domain code (``domain.preview``). Nothing is stored: the group need
not be published or even created.

Body (``TestAttributeGroupRequest``, dumped without ``by_alias``, so a batch source carries
``schema_``): ``{"attribute_group": {...}, "app_ids": [...], "window": "PT1H",
"attribute_key_ids": [...]}``. Answer: a JSON list of rows ``{<key name>: id, <attribute>:
value, ...}`` (what ``pandas.DataFrame`` takes) — one per requested id in request order, or,
when none is named, the ``limit`` (query parameter, default 10) most recently active ids.
Errors: an invalid body or group -> 422; a custom key named but not published -> 422; Kafka
unreachable -> 503.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from processor.api.auth import require_token
from processor.api.signals_errors import json_object
from processor.domain.definitions import BUILTIN_ATTRIBUTE_KEYS, AttributeGroup, AttributeKey
from processor.domain.preview import DEFAULT_SAMPLE, decode_records, preview_group
from processor.errors import DefinitionError
from processor.publishing import DefinitionNotFound, SignalsCatalog
from processor.settings import Settings
from processor.state.registry import Registry
from processor.streams import recent

router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_token)])

KeyId = Annotated[str, StringConstraints(
    pattern=r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$|^[A-Za-z0-9_-]+$",
    min_length=1, max_length=128)]  # fmt: skip
MAX_WINDOW = timedelta(days=30)
Body = Depends(json_object)


class TestAttributeGroupRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", regex_engine="python-re")

    attribute_group: dict[str, Any]
    app_ids: list[Annotated[str, StringConstraints(min_length=1)]] | None = Field(None, max_length=10)
    window: timedelta = timedelta(hours=1)
    attribute_key_ids: list[KeyId] | None = Field(None, max_length=50)


def _problems(exc: ValidationError, what: str) -> str:
    return f"invalid {what}: " + "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or what}: {e['msg']}" for e in exc.errors()
    )


async def _key_for(request: Request, group: AttributeGroup) -> AttributeKey | None:
    """The full key when the group names a custom key only by name (looked up in the
    registry); None for built-ins and keys carried inline."""
    key = group.attribute_key
    if key.property is not None or key.external_column is not None:
        return None
    if key.name in BUILTIN_ATTRIBUTE_KEYS:
        return None
    try:
        return await SignalsCatalog(Registry(request.app.state.redis)).attribute_key(key.name)
    except DefinitionNotFound:
        raise HTTPException(
            422, f"unknown attribute key {key.name!r}: publish it first or send its property inline"
        ) from None


@router.post("/testing/attribute_groups/")
async def test_attribute_group(
    request: Request,
    doc: dict[str, Any] = Body,
    limit: int = Query(DEFAULT_SAMPLE, ge=1, le=1000),
) -> list[dict[str, Any]]:
    try:
        body = TestAttributeGroupRequest.model_validate(doc)
    except ValidationError as exc:
        raise HTTPException(422, _problems(exc, "TestAttributeGroupRequest")) from None
    if not timedelta(0) < body.window <= MAX_WINDOW:
        raise HTTPException(422, f"window must be positive and at most {MAX_WINDOW.days} days")
    try:
        group = AttributeGroup.model_validate(body.attribute_group)
    except ValidationError as exc:
        raise HTTPException(422, _problems(exc, "AttributeGroup")) from None
    if not group.attributes:
        raise HTTPException(
            422, "only stream attributes can be tested here: the group has no attributes"
        )
    key = await _key_for(request, group)
    settings: Settings = request.app.state.settings
    now_ms = time.time_ns() // 1_000_000
    since_ms = now_ms - int(body.window.total_seconds() * 1000)
    try:
        records = await recent.recent_records(settings, since_ms=since_ms)
    except Exception as exc:  # aiokafka raises its own errors and timeouts alike
        raise HTTPException(503, f"could not read the events topic: {exc!r}") from None
    events, _failed = decode_records(records, now_ms=now_ms, max_bytes=settings.max_event_bytes)
    try:
        return preview_group(
            group, events, now_ms=now_ms, since_ms=since_ms, key=key, limit=limit,
            key_ids=body.attribute_key_ids or (), app_ids=body.app_ids or (),
        )  # fmt: skip
    except (ValueError, DefinitionError) as exc:
        raise HTTPException(422, f"invalid AttributeGroup: {exc}") from None
