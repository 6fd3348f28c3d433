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


def changed_fields(state: EntityState) -> tuple[dict[str, bytes], list[str]]:
    """The changed fields of ``state``: hash field -> stored JSON to set, and fields to delete.
    A group with a changed attribute is written whole, with every attribute state it holds."""
    sets: dict[str, bytes] = {}
    deletes: list[str] = []
    groups, fields = state.groups, _GROUP_FIELDS
    for key in state.dirty_group_keys():
        sets[fields[key]] = orjson.dumps(groups[key])
    profile = state.profile
    for name in state.dirty_profile:
        sets[keys.profile_field(name)] = orjson.dumps(profile[name])
    for kind, name in state.dirty:
        if kind == "m":
            if state.members.get(name):
                sets[keys.member_field(name)] = b"1"
            else:
                deletes.append(keys.member_field(name))
        elif kind == "ids":
            sets[keys.IDENTIFIERS_FIELD] = orjson.dumps(state.identifiers)
        elif kind == "l":
            sets[keys.event_log_field(name)] = orjson.dumps(state.event_logs[name])
    # watermarks travel separately (watermark_args), checked by the write script
    return sets, deletes


def watermark_args(state: EntityState) -> dict[str, int]:
    """The watermarks this write advances. Only those are checked by the write script: an
    entity fed from several source partitions must not be refused for the ones it did not
    touch in this batch."""
    return {keys.watermark_field(*key): state.watermarks[key] for key in state.dirty_watermarks}


def write_entry(state: EntityState) -> tuple[list[Any], list[bytes]]:
    """What the write script takes for ``state`` (see ``lua/write_entity.lua``): its entry of
    the chunk's header, ``[marks, fields, lengths, deletes]`` (``marks`` the advanced
    watermarks as field, offset text, ...; ``lengths`` those of the values to set, in
    ``fields`` order) and the values themselves, to append to the chunk's payload."""
    watermarks, fields = state.watermarks, _WATERMARK_FIELDS
    marks: list[str] = []
    for key in state.dirty_watermarks:
        marks += (fields[key], str(watermarks[key]))
    sets, deletes = changed_fields(state)
    values = list(sets.values())
    return [marks, list(sets), [len(value) for value in values], deletes], values


class _WatermarkFields(dict[tuple[str, int], str]):
    """(topic, partition) -> hash field name; bounded by the partitions a worker has owned."""

    def __missing__(self, key: tuple[str, int]) -> str:
        field = self[key] = keys.watermark_field(*key)
        return field


_WATERMARK_FIELDS = _WatermarkFields()
