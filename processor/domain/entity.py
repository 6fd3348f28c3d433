"""The in-memory state of one entity, as the single writer of its partition holds it.

The worker loads an entity from Redis on first touch, applies events to this object in plain
Python, and writes back only what changed (``dirty``) together with its offset watermarks.
How fields are laid out in Redis is the state layer's business, not this module's.
"""

from __future__ import annotations

from typing import Any

from processor.domain.transitions import EntityRef


class EntityState:
    """Mutable state of one entity; every mutation goes through a method that marks it dirty."""

    __slots__ = ("ref", "watermarks", "attributes", "profile", "members", "identifiers", "dirty",
                 "dirty_slots", "dirty_runs", "dirty_profile", "dirty_watermarks", "stored",
                 "event_logs")

    def __init__(self, ref: EntityRef) -> None:
        self.ref = ref
        # (topic, partition) -> highest offset applied
        self.watermarks: dict[tuple[str, int], int] = {}
        # (group, version, attribute) -> aggregation state (JSON-serialisable)
        self.attributes: dict[tuple[str, int, str], Any] = {}
        # profile field -> [value, event time ms] (last value wins by event time)
        self.profile: dict[str, list[Any]] = {}
        # segment id -> True while a member
        self.members: dict[str, bool] = {}
        self.identifiers: dict[str, str] = {}
        # event log name -> recent entries {"ts", "event", "properties"}, oldest first
        self.event_logs: dict[str, list[dict[str, Any]]] = {}
        # What changed since the last write. Attributes, profile fields and watermarks change
        # on every event, so each has its own record (no tagged tuple to build and hash per
        # change); the rest: ("m", id) / ("l", name) / ("ids", ""). Attribute slots come one by
        # one (``set_attribute``) or as runs marked together (``mark_attributes``: the same
        # dozen slots for each event of a kind), merged only when read (``dirty_attributes``).
        self.dirty_slots: set[tuple[str, int, str]] = set()
        self.dirty_runs: list[tuple[tuple[str, int, str], ...]] = []
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
        self.dirty_slots.clear()
        self.dirty_runs.clear()
        self.dirty_profile.clear()
        self.dirty_watermarks.clear()
        self.dirty.clear()

    def set_attribute(self, key: tuple[str, int, str], state: Any) -> None:
        self.attributes[key] = state
        self.dirty_slots.add(key)

    def mark_attributes(self, keys: tuple[tuple[str, int, str], ...]) -> None:
        """Mark attributes changed whose states were updated in place in ``attributes`` (the
        engine's hot path). ``keys`` is kept as given (not copied): it must not change."""
        self.dirty_runs.append(keys)

    def dirty_attributes(self) -> set[tuple[str, int, str]]:
        """Every attribute slot changed since the last write."""
        slots = set(self.dirty_slots)
        # Events of one kind mark the very same tuple: merge each distinct one once.
        for run in {id(run): run for run in self.dirty_runs}.values():
            slots.update(run)
        return slots

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
