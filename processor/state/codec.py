"""Entity state <-> the fields of its Redis hash (layout in ``keys``)."""

from __future__ import annotations

from typing import Any

import orjson

from processor.domain.entity import EntityState
from processor.domain.transitions import EntityRef
from processor.state import keys

DELETE = None  # the write script deletes a field whose value is JSON null


class _AttributeFields(dict[tuple[str, int, str], str]):
    """(group, version, attribute) -> hash field name; formatting it per write costs more than
    the JSON of a small state. Bounded by the number of published attributes."""

    def __missing__(self, slot: tuple[str, int, str]) -> str:
        field = self[slot] = keys.attribute_field(*slot)
        return field


_ATTRIBUTE_FIELDS = _AttributeFields()


def decode_entity(ref: EntityRef, raw: dict[bytes, bytes]) -> EntityState:
    """Build an entity from HGETALL output; unknown fields are ignored (forward compatible)."""
    state = EntityState(ref)
    state.stored = bool(raw)
    for raw_field, value in raw.items():
        field = raw_field.decode()
        kind, _, rest = field.partition(":")
        if kind == "wm":
            topic, _, partition = rest.rpartition(":")
            state.watermarks[(topic, int(partition))] = int(value)
        elif kind == "a":
            group, version, attribute = rest.split(":", 2)
            state.attributes[(group, int(version), attribute)] = orjson.loads(value)
        elif kind == "p":
            state.profile[rest] = orjson.loads(value)
        elif kind == "m":
            state.members[rest] = True
        elif kind == "l":
            state.event_logs[rest] = orjson.loads(value)
        elif field == keys.IDENTIFIERS_FIELD:
            state.identifiers = orjson.loads(value)
    return state


def dirty_fields(state: EntityState) -> dict[str, str | None]:
    """The changed fields of ``state`` as hash field -> stored text (``DELETE`` to remove)."""
    out: dict[str, str | None] = {}
    attributes = state.attributes
    fields = _ATTRIBUTE_FIELDS
    for slot in state.dirty_attributes():
        out[fields[slot]] = orjson.dumps(attributes[slot]).decode()
    profile = state.profile
    for name in state.dirty_profile:
        out[keys.profile_field(name)] = orjson.dumps(profile[name]).decode()
    for kind, name in state.dirty:
        if kind == "m":
            out[keys.member_field(name)] = "1" if state.members.get(name) else DELETE
        elif kind == "ids":
            out[keys.IDENTIFIERS_FIELD] = _dumps(state.identifiers)
        elif kind == "l":
            out[keys.event_log_field(name)] = _dumps(state.event_logs[name])
    # watermarks travel separately (watermark_args), checked by the write script
    return out


def watermark_args(state: EntityState) -> dict[str, int]:
    """The watermarks this write advances. Only those are checked by the write script: an
    entity fed from several source partitions must not be refused for the ones it did not
    touch in this batch."""
    return {keys.watermark_field(*key): state.watermarks[key] for key in state.dirty_watermarks}


def dirty_payload(state: EntityState) -> bytes:
    """The changed fields as one JSON object, the write script's last argument."""
    return orjson.dumps(dirty_fields(state))


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
