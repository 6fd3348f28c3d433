"""Entity state <-> the fields of its Redis hash (layout in ``keys``).

Attributes are stored one field per attribute group (``keys.GROUP_FIELD``): a JSON object of
the group's aggregation states by attribute name. A write rewrites the object of every group
with a changed attribute, so an entity write is one JSON document per changed group rather than
one per changed attribute (about 5 instead of 17 on the benchmark's topology): the encoding was
a quarter of the worker's time. Other fields hold one JSON value each.
"""

from __future__ import annotations

from typing import Any

import orjson

from processor.domain.entity import EntityState
from processor.domain.transitions import EntityRef
from processor.state import keys


class _GroupFields(dict[tuple[str, int], str]):
    """(group, version) -> hash field name; bounded by the published groups."""

    def __missing__(self, group: tuple[str, int]) -> str:
        field = self[group] = keys.group_field(*group)
        return field


_GROUP_FIELDS = _GroupFields()


def decode_entity(ref: EntityRef, raw: dict[bytes, bytes]) -> EntityState:
    """Build an entity from HGETALL output; unknown fields, and unknown kinds of field, are
    ignored (forward compatible)."""
    state = EntityState(ref)
    state.stored = bool(raw)
    for raw_field, value in raw.items():
        field = raw_field.decode()
        kind, _, rest = field.partition(":")
        if kind == "g":
            group, _, version = rest.rpartition(":")
            states = orjson.loads(value)
            if isinstance(states, dict):
                state.groups[(group, int(version))] = states
        elif kind == "wm":
            topic, _, partition = rest.rpartition(":")
            state.watermarks[(topic, int(partition))] = int(value)
        elif kind == "p":
            state.profile[rest] = orjson.loads(value)
        elif kind == "m":
            state.members[rest] = True
        elif kind == "l":
            state.event_logs[rest] = orjson.loads(value)
        elif field == keys.IDENTIFIERS_FIELD:
            state.identifiers = orjson.loads(value)
    return state


class _ProfileFields(dict[str, str]):
    """profile field name -> hash field name; bounded by ``PROFILE_FIELDS_MAX``."""

    def __missing__(self, name: str) -> str:
        if len(self) >= PROFILE_FIELDS_MAX:  # generic events may carry any field names
            self.clear()
        field = self[name] = keys.profile_field(name)
        return field


PROFILE_FIELDS_MAX = 4096
_PROFILE_FIELDS = _ProfileFields()


def changed_fields(state: EntityState) -> tuple[dict[str, bytes], list[str]]:
    """The changed fields of ``state``: hash field -> stored JSON to set, and fields to delete.
    A group with a changed attribute is written whole, with every attribute state it holds."""
    fields: list[str] = []
    values: list[bytes] = []
    deletes = _changes(state, fields, values)
    # watermarks travel separately (watermark_args), checked by the write script
    return dict(zip(fields, values, strict=True)), deletes


def _changes(state: EntityState, fields: list[str], values: list[bytes]) -> list[str]:
    """Append the changed fields of ``state`` and their values to ``fields`` and ``values``
    (no field twice: each kind of field has its own prefix); return the fields to delete."""
    dumps = orjson.dumps
    groups, group_fields = state.groups, _GROUP_FIELDS
    for key in state.dirty_group_keys():
        fields.append(group_fields[key])
        values.append(dumps(groups[key]))
    profile, profile_fields = state.profile, _PROFILE_FIELDS
    for name in state.dirty_profile:
        fields.append(profile_fields[name])
        values.append(dumps(profile[name]))
    deletes: list[str] = []
    if not state.dirty:
        return deletes
    for kind, name in state.dirty:
        if kind == "m":
            if state.members.get(name):
                fields.append(keys.member_field(name))
                values.append(b"1")
            else:
                deletes.append(keys.member_field(name))
        elif kind == "ids":
            fields.append(keys.IDENTIFIERS_FIELD)
            values.append(dumps(state.identifiers))
        elif kind == "l":
            fields.append(keys.event_log_field(name))
            values.append(dumps(state.event_logs[name]))
    return deletes


def watermark_args(state: EntityState) -> dict[str, int]:
    """The watermarks this write advances. Only those are checked by the write script: an
    entity fed from several source partitions must not be refused for the ones it did not
    touch in this batch."""
    return {keys.watermark_field(*key): state.watermarks[key] for key in state.dirty_watermarks}


def write_entry_into(state: EntityState, payload: list[bytes]) -> list[Any]:
    """What the write script takes for ``state`` (see ``lua/write_entity.lua``): its entry of
    the chunk's header, ``[marks, fields, lengths, deletes]`` (``marks`` the advanced
    watermarks as field, offset text, ...; ``lengths`` those of the values to set, in
    ``fields`` order), returned; the values themselves are appended to ``payload``, the
    chunk's."""
    watermarks, watermark_fields = state.watermarks, _WATERMARK_FIELDS
    marks: list[str] = []
    for key in state.dirty_watermarks:
        marks += (watermark_fields[key], str(watermarks[key]))
    fields: list[str] = []
    start = len(payload)
    deletes = _changes(state, fields, payload)
    return [marks, fields, list(map(len, payload[start:])), deletes]


class _WatermarkFields(dict[tuple[str, int], str]):
    """(topic, partition) -> hash field name; bounded by the partitions a worker has owned."""

    def __missing__(self, key: tuple[str, int]) -> str:
        field = self[key] = keys.watermark_field(*key)
        return field


_WATERMARK_FIELDS = _WatermarkFields()
