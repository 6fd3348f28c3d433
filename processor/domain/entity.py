"""The in-memory state of one entity, as the single writer of its partition holds it.

The worker loads an entity from Redis on first touch, applies events to this object in plain
Python, and writes back only what changed (``dirty``) together with its offset watermarks.
How fields are laid out in Redis is the state layer's business, not this module's.
"""

from __future__ import annotations

from typing import Any

from processor.domain.transitions import EntityRef

#: An attribute group's version: ``(group name, version)``; a state slot adds the attribute name.
GroupKey = tuple[str, int]
Slot = tuple[str, int, str]


class EntityState:
    """Mutable state of one entity; every mutation goes through a method that marks it dirty."""

    __slots__ = ("ref", "watermarks", "groups", "profile", "members", "identifiers", "dirty",
                 "dirty_groups", "dirty_runs", "dirty_profile", "dirty_watermarks", "stored",
                 "event_logs")

    def __init__(self, ref: EntityRef) -> None:
        self.ref = ref
        # (topic, partition) -> highest offset applied
        self.watermarks: dict[tuple[str, int], int] = {}
        # (group, version) -> attribute name -> aggregation state (JSON-serialisable). Nested
        # by group as the state layer stores them (one document per group), so writing a
        # changed group takes its states as they are.
        self.groups: dict[GroupKey, dict[str, Any]] = {}
        # profile field -> [value, event time ms] (last value wins by event time)
        self.profile: dict[str, list[Any]] = {}
        # segment id -> True while a member
        self.members: dict[str, bool] = {}
        self.identifiers: dict[str, str] = {}
        # event log name -> recent entries {"ts", "event", "properties"}, oldest first
        self.event_logs: dict[str, list[dict[str, Any]]] = {}
        # What changed since the last write. Attribute groups, profile fields and watermarks
        # change on every event, so each has its own record (no tagged tuple to build and hash
        # per change); the rest: ("m", id) / ("l", name) / ("ids", ""). Changed groups come one
        # by one (``set_attribute``) or as runs marked together (``mark_groups``: the same few
        # groups for each event of a kind), merged only when read (``dirty_group_keys``).
        self.dirty_groups: set[GroupKey] = set()
        self.dirty_runs: list[tuple[GroupKey, ...]] = []
        self.dirty_profile: set[str] = set()
        self.dirty_watermarks: set[tuple[str, int]] = set()
        self.dirty: set[tuple[str, str]] = set()
        # False until the entity has been written once (it then joins its partition's index)
        self.stored = False

    def already_applied(self, topic: str, partition: int, offset: int) -> bool:
        """True when this offset was applied before (a replay after a crash or rebalance)."""
        applied = self.watermarks.get((topic, partition))
        return applied is not None and offset <= applied

    def advance(self, topic: str, partition: int, offset: int) -> None:
        key = (topic, partition)
        self.watermarks[key] = offset
        self.dirty_watermarks.add(key)

    def clear_dirty(self) -> None:
        """Forget what changed: the state layer has taken it for writing."""
        # Most of these are empty after most batches: a test costs less than a call.
        if self.dirty_groups:
            self.dirty_groups.clear()
        self.dirty_runs.clear()
        self.dirty_profile.clear()
        self.dirty_watermarks.clear()
        if self.dirty:
            self.dirty.clear()

    def attribute(self, slot: Slot) -> Any:
        """The state of one attribute, None when it has none."""
        states = self.groups.get(slot[:2])
        return None if states is None else states.get(slot[2])

    def attributes(self) -> dict[Slot, Any]:
        """Every attribute state by slot, groups in the order they were first set."""
        return {(*key, name): state for key, states in self.groups.items() for name, state in states.items()}

    def set_attribute(self, slot: Slot, state: Any) -> None:
        key = slot[:2]
        states = self.groups.get(key)
        if states is None:
            states = self.groups[key] = {}
        states[slot[2]] = state
        self.dirty_groups.add(key)

    def mark_groups(self, keys: tuple[GroupKey, ...]) -> None:
        """Mark groups changed whose states were updated in place in ``groups`` (the engine's
        hot path: its generated folds append to ``dirty_runs`` themselves). ``keys`` is kept as
        given (not copied): it must not change."""
        self.dirty_runs.append(keys)

    def dirty_group_keys(self) -> set[GroupKey]:
        """Every group with an attribute changed since the last write."""
        runs = self.dirty_runs
        if len(runs) == 1 and not self.dirty_groups:  # one event since the last write
            return set(runs[0])
        keys = set(self.dirty_groups)
        # Events of one kind mark the very same tuple: merge each distinct one once.
        for run in {id(run): run for run in runs}.values():
            keys.update(run)
        return keys

    def set_profile(self, name: str, value: Any, ts_ms: int) -> bool:
        """Set a profile field unless a later event already set it; return whether it changed."""
        current = self.profile.get(name)
        if current is not None and current[1] > ts_ms:
            return False
        if current is not None and current[0] == value:
            current[1] = ts_ms
            self.dirty_profile.add(name)
            return False
        self.profile[name] = [value, ts_ms]
        self.dirty_profile.add(name)
        return True

    def set_member(self, segment_id: str, member: bool) -> None:
        if member:
            self.members[segment_id] = True
        else:
            self.members.pop(segment_id, None)
        self.dirty.add(("m", segment_id))

    def set_event_log(self, name: str, entries: list[dict[str, Any]]) -> None:
        self.event_logs[name] = entries
        self.dirty.add(("l", name))

    def add_identifiers(self, identifiers: dict[str, str]) -> None:
        for name, value in identifiers.items():
            if self.identifiers.get(name) != value:
                self.identifiers[name] = value
                self.dirty.add(("ids", ""))

    def profile_values(self) -> dict[str, Any]:
        return {name: pair[0] for name, pair in self.profile.items()}
