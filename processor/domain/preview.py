"""Evaluate a draft attribute group over a list of recent events (signals-api §1.10).

Pure: the caller reads the records (``processor.streams.recent``) and hands them over; nothing
here is stored. Records are decoded with the worker's rules (``decode_record``) and every
event is folded through the same compiled group and aggregation state machines the worker
uses (``topology.compile_group``, ``aggregations.apply``/``read``), so a preview shows what the
group would compute if it had been published before the events arrived.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from processor.domain import aggregations, properties
from processor.domain.definitions import AttributeGroup, AttributeKey, resolve_attribute_key
from processor.domain.events import (
    Event,
    EventDecodeError,
)
from processor.domain.records import RawRecord, decode_record
from processor.domain.topology import compile_group

DEFAULT_SAMPLE = 10  # ids shown when the request names none (the product picks 10 at random)


def decode_records(
    records: Iterable[RawRecord], *, now_ms: int, max_bytes: int = 1_000_000
) -> tuple[list[Event], int]:
    """Decoded events and the number of records that could not be decoded (skipped)."""
    events, failed = [], 0
    for record in records:
        try:
            events.append(decode_record(record, now_ms=now_ms, max_bytes=max_bytes))
        except EventDecodeError:
            failed += 1
    return events, failed


@dataclass
class _Entity:
    states: dict[str, aggregations.State]
    last_seen_ms: int


def preview_group(
    group: AttributeGroup,
    events: Iterable[Event],
    *,
    now_ms: int,
    since_ms: int | None = None,
    key_ids: Sequence[str] = (),
    app_ids: Sequence[str] = (),
    key: AttributeKey | None = None,
    limit: int = DEFAULT_SAMPLE,
) -> list[dict[str, Any]]:
    """Rows ``{<key name>: id, <attribute>: value, ...}``, one per attribute-key value.

    ``key`` is the full attribute key when the group names a custom key only by name (the
    caller looks it up); built-ins and inline keys need none. Events before ``since_ms`` or
    after ``now_ms``, outside ``app_ids`` (when given) or repeated (same event id) are ignored.
    With ``key_ids`` the rows are those ids in the given order (an id without events reads
    the defaults); without, the ``limit`` most recently active ids, most recent first.
    Raises ``ValueError``/``DefinitionError`` for a group that cannot run.
    """
    compiled = compile_group(group)
    key_def = key or resolve_attribute_key(group.attribute_key)
    column = group.attribute_key.name
    wanted = set(key_ids)
    apps = set(app_ids)
    specs = {a.name: a.spec for a in compiled.attributes}
    chosen: list[Event] = []
    seen_ids: set[str] = set()
    for event in events:
        if since_ms is not None and event.timestamp_ms < since_ms:
            continue
        if event.timestamp_ms > now_ms or event.event_id in seen_ids:
            continue
        if apps and event.atomic.get("app_id") not in apps:
            continue
        seen_ids.add(event.event_id)
        chosen.append(event)
    chosen.sort(key=lambda e: e.timestamp_ms)  # stable: ties keep stream order

    entities: dict[str, _Entity] = {}
    for event in chosen:
        entity_id = properties.attribute_key_value(event, key_def)
        if entity_id is None or (wanted and entity_id not in wanted):
            continue
        entity = entities.get(entity_id)
        if entity is None:
            entity = entities[entity_id] = _Entity({}, event.timestamp_ms)
        entity.last_seen_ms = max(entity.last_seen_ms, event.timestamp_ms)
        values: dict[str, Any] = {}
        for attribute in compiled.attributes_for(event):
            if not attribute.passes_criteria(event):
                continue
            vk = attribute.value_key
            value = values[vk] if vk in values else values.setdefault(vk, attribute.value_of(event))
            current = entity.states.get(attribute.name)
            if current is None:
                current = aggregations.new_state(attribute.spec)
            entity.states[attribute.name] = aggregations.apply(
                attribute.spec, current, value, event.timestamp_ms
            )

    if key_ids:
        ids = list(dict.fromkeys(key_ids))
    else:
        ranked = sorted(entities.items(), key=lambda item: (-item[1].last_seen_ms, item[0]))
        ids = [entity_id for entity_id, _ in ranked[: max(limit, 0)]]
    rows = []
    for entity_id in ids:
        entity = entities.get(entity_id)
        row: dict[str, Any] = {column: entity_id}
        for name, spec in specs.items():
            state = entity.states.get(name) if entity is not None else None
            row[name] = spec.default_value if state is None else aggregations.read(spec, state, now_ms)
        rows.append(row)
    return rows
