"""Reading attribute values and event logs for the Profiles Store API (signals-api §1.7, §1.9).

Readers never write. Values are computed at read time from the stored aggregation state with
the same ``AggSpec`` the worker uses (``topology.spec_for``), so windows decay and
``time_since_*`` grow between reads without any event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from processor.domain import aggregations
from processor.domain.definitions import AttributeGroup
from processor.domain.topology import entity_key_of, spec_for
from processor.state import keys

# What one requested column reads: a group and one of its attribute (or batch field) names.
GroupAttributes = Sequence[tuple[AttributeGroup, Sequence[str]]]

_IDS_FIELD = keys.IDENTIFIERS_FIELD.encode()
_FIELD = object()  # marker: a batch ``field``, stored as its plain JSON value


@dataclass(frozen=True, slots=True)
class _Compiled:
    """What reading a group needs, computed once per group object (definitions are frozen)."""

    group: AttributeGroup  # held so that id(group) cannot be reused while cached
    entity_key: str
    columns: dict[str, tuple[bytes, Any]]  # name -> (hash field, AggSpec or _FIELD)


_COMPILED: dict[int, _Compiled] = {}
_COMPILED_MAX = 4096


def _compiled(group: AttributeGroup) -> _Compiled:
    hit = _COMPILED.get(id(group))
    if hit is not None and hit.group is group:
        return hit
    columns: dict[str, tuple[bytes, Any]] = {}
    for attribute in group.attributes or ():
        field = keys.attribute_field(group.name, group.version, attribute.name).encode()
        columns[attribute.name] = (field, spec_for(attribute, group))
    for batch_field in group.fields or ():
        field = keys.attribute_field(group.name, group.version, batch_field.name).encode()
        columns[batch_field.name] = (field, _FIELD)
    if len(_COMPILED) >= _COMPILED_MAX:
        _COMPILED.clear()  # registry changes are rare; a full reset is simpler than an LRU
    compiled = _COMPILED[id(group)] = _Compiled(group, entity_key_of(group), columns)
    return compiled


def entity_key(group: AttributeGroup) -> str:
    """``topology.entity_key_of(group)``, memoised for the read path."""
    return _compiled(group).entity_key


def _specs(groups_and_attrs: GroupAttributes, key: str) -> tuple[list[bytes], list[Any]]:
    fields: list[bytes] = []
    specs: list[Any] = []
    for group, names in groups_and_attrs:
        compiled = _compiled(group)
        if compiled.entity_key != key:
            raise ValueError(
                f"attribute group {group.name} is keyed on {compiled.entity_key}, not {key}"
            )
        for name in names:
            column = compiled.columns.get(name)
            if column is None:
                raise ValueError(f"attribute group {group.name} has no attribute {name}")
            fields.append(column[0])
            specs.append(column[1])
    return fields, specs


async def read_attributes(
    redis: Redis, groups_and_attrs: GroupAttributes, key: str, ids: Sequence[str], now_ms: int
) -> list[list[Any]]:
    """Column-major values: one list per requested ``(group, attribute)`` in request order,
    each with one value per id in ``ids`` order.

    ``key`` is the entity key the groups are stored under (``topology.entity_key_of``); every
    group must use it (``ValueError`` otherwise, or for an unknown attribute name). One Redis
    round trip: a pipelined HMGET per id of the needed fields plus the entity's identifiers
    field, which tells a known entity from a never-seen one. A never-seen id reads None for
    every column; a known entity without state for an attribute (no matching event yet) reads
    the attribute's ``default_value`` (None when unset), like an empty aggregation.
    """
    fields, specs = _specs(groups_and_attrs, key)
    columns: list[list[Any]] = [[] for _ in specs]
    if not ids:
        return columns
    async with redis.pipeline(transaction=False) as pipe:
        for entity_id in ids:
            pipe.hmget(keys.entity_state(key, entity_id), [*fields, _IDS_FIELD])
        rows = await pipe.execute()
    for row in rows:
        known = row[-1] is not None
        for column, spec, raw in zip(columns, specs, row, strict=False):
            column.append(_value(spec, raw, known, now_ms))
    return columns


def _value(spec: Any, raw: bytes | None, known: bool, now_ms: int) -> Any:
    if spec is _FIELD:
        return None if raw is None else orjson.loads(raw)
    if raw is None:
        return aggregations.read(spec, aggregations.new_state(spec), now_ms) if known else None
    return aggregations.read(spec, orjson.loads(raw), now_ms)


async def read_event_log(redis: Redis, key: str, entity_id: str, name: str) -> list[dict[str, Any]]:
    """The entries of one entity's event log, oldest first. The worker keeps them in the
    entity's state hash (written atomically with its watermarks, so exactly once): one JSON
    object per selected event, ``{"ts": <event ms>, "event": <name>, "properties": {...}}``,
    trimmed to ``max_events`` and ``max_age_seconds``."""
    raw = await redis.hget(keys.entity_state(key, entity_id), keys.event_log_field(name))
    if raw is None:
        return []
    try:
        entries = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return []
    return [entry for entry in entries if isinstance(entry, dict)] if isinstance(entries, list) else []
