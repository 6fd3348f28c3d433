"""Apply one event (or one due time) to one entity: profile, attributes, segments.

Pure and synchronous: the worker calls it on its in-process cache of entity state and writes
back what changed. The same function serves the reference path in tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from processor.domain import aggregations
from processor.domain.entity import EntityState
from processor.domain.events import Event
from processor.domain.properties import matches_criteria
from processor.domain.topology import (
    CompiledAttribute,
    CompiledEventLog,
    CompiledSegment,
    Selection,
    Topology,
)
from processor.domain.transitions import EntityRef, Transition, TransitionKind, transition_id
from processor.segmentql import SegmentQLError, evaluate, next_boundary

LAST_ACTIVE_FIELD = "last_active_ts"


def entities_of(event: Event, topology: Topology) -> list[EntityRef]:
    """Every entity this event updates: one per attribute key in use that the event carries."""
    refs = []
    for key in topology.keys:
        value = key.value_of(event)
        if value is not None:
            refs.append(EntityRef(key.name, value))
    return refs


def apply_event(
    state: EntityState, event: Event, topology: Topology, *, cause: str, now_ms: int,
    identifiers: dict[str, str] | None = None,
) -> list[Transition]:
    """Fold ``event`` into ``state``; return the membership transitions it causes.

    ``cause`` (``topic/partition/offset``) makes transition ids deterministic, so replaying
    the same event after a crash yields the same ids. The caller checks and advances the
    offset watermark; this function does not look at offsets. Segments are re-evaluated only
    when the event changed something they read, or the entity is new (a segment can match a
    profile on missing fields alone); time alone is the scheduler's business (``next_due``).
    """
    key = state.ref.key
    state.add_identifiers(identifiers if identifiers is not None else event_identifiers(event, topology))
    changed = _merge_profile(state, event)
    selection = topology.attributes_for(key, event)
    passed = _update_attributes(state, selection, event)
    if topology.event_logs:
        for log in topology.event_logs_for(key):
            _append_to_log(state, log, event)
    if not topology.segments:
        return []  # nothing reads what changed
    changed.update(selection.names)
    changed.update(a.name for a in passed)
    if state.stored and changed.isdisjoint(topology.segment_fields(key)):
        return []
    return evaluate_segments(state, topology, cause=cause, now_ms=now_ms, at_ms=event.timestamp_ms,
                             changed=changed if state.stored else None)


def event_identifiers(event: Event, topology: Topology) -> dict[str, str]:
    found = {}
    for key in topology.keys:
        value = key.value_of(event)
        if value is not None:
            found[key.name] = value
    return found


def _merge_profile(state: EntityState, event: Event) -> set[str]:
    """Lytics-style profile: each top-level field of the event, last value wins by event time.
    Returns the names whose value changed."""
    changed = set()
    for name, value in event.fields.items():
        if isinstance(value, dict):
            continue  # nested objects stay in the event; profiles hold scalar and list fields
        if state.set_profile(name, value, event.timestamp_ms):
            changed.add(name)
    if LAST_ACTIVE_FIELD in event.fields:
        return changed  # the event states its own last activity (a profile field like any other)
    current = state.profile.get(LAST_ACTIVE_FIELD)
    if current is None or not isinstance(current[0], int) or current[0] < event.timestamp_ms:
        state.set_profile(LAST_ACTIVE_FIELD, event.timestamp_ms, event.timestamp_ms)
        changed.add(LAST_ACTIVE_FIELD)
    return changed


def _update_attributes(state: EntityState, selection: Selection, event: Event) -> list[CompiledAttribute]:
    """Fold ``event`` into the selected attributes that pass their criteria and mark them
    dirty; return the conditional ones that passed (their names changed, like the plain ones)."""
    resolved: dict[str, Any] = {}  # property -> value, resolved once per event
    _fold(state, selection.plain, event, resolved)
    state.mark_attributes(selection.slots)
    if not selection.conditional:
        return []
    passed = [a for a in selection.conditional if matches_criteria(event, a.criteria)]
    if passed:
        _fold(state, passed, event, resolved)
        state.mark_attributes(tuple(a.slot for a in passed))
    return passed


def _fold(
    state: EntityState, attributes: Sequence[CompiledAttribute], event: Event, resolved: dict[str, Any]
) -> None:
    """The hot loop (about a dozen attributes per event): per-attribute work is kept minimal,
    and the caller marks what changed."""
    ts = event.timestamp_ms
    atomic = event.atomic
    stored = state.attributes
    for attribute in attributes:
        spec = attribute.spec
        if not spec.uses_value:
            value = None
        elif attribute.atomic is not None:
            value = atomic.get(attribute.atomic)
        else:
            key = attribute.value_key
            value = resolved[key] if key in resolved else resolved.setdefault(key, attribute.value_of(event))
        slot = attribute.slot
        current = stored.get(slot)
        step = spec.step  # a plain load: spec.step(...) would look it up as a method first
        updated = step(current, value, ts)
        if updated is not current:  # a new state, or a TTL reset; most are updated in place
            stored[slot] = updated


def _append_to_log(state: EntityState, log: CompiledEventLog, event: Event) -> None:
    """Keep the newest ``max_events`` entries within ``max_age`` of the newest, oldest first
    (ordered by event time, so a late event lands in its place)."""
    entry = log.entry(event)
    if entry is None:
        return
    entries = [*state.event_logs.get(log.name, ()), entry]
    entries.sort(key=lambda e: e["ts"])
    cutoff = entries[-1]["ts"] - log.max_age_ms
    kept = [e for e in entries if e["ts"] > cutoff][-log.max_events:]
    state.set_event_log(log.name, kept)


class ProfileView(Mapping[str, Any]):
    """What a segment sees: profile fields, overridden by the entity's attribute values.
    Lazy: an attribute is read (``aggregations.read``) only when a segment asks for it."""

    __slots__ = ("_state", "_attributes", "_now", "_read")

    def __init__(self, state: EntityState, topology: Topology, now_ms: int) -> None:
        self._state = state
        self._attributes = topology.attribute_index(state.ref.key)
        self._now = now_ms
        self._read: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name in self._read:
            return self._read[name]
        found = self._attributes.get(name)
        stored = None if found is None else self._state.attributes.get(found[0])
        if stored is not None and found is not None:
            value = self._read[name] = aggregations.read(found[1], stored, self._now)
            return value
        return self._state.profile[name][0]

    def __contains__(self, name: object) -> bool:
        if name in self._state.profile:
            return True
        found = self._attributes.get(name) if isinstance(name, str) else None
        return found is not None and found[0] in self._state.attributes

    def __iter__(self) -> Iterator[str]:
        names = dict.fromkeys(self._state.profile)
        names.update((n, None) for n, (slot, _) in self._attributes.items() if slot in self._state.attributes)
        return iter(names)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def profile_view(state: EntityState, topology: Topology, now_ms: int) -> ProfileView:
    return ProfileView(state, topology, now_ms)


def evaluate_segments(
    state: EntityState, topology: Topology, *, cause: str, now_ms: int, at_ms: int,
    changed: set[str] | None = None,
) -> list[Transition]:
    """Re-evaluate every segment of the entity's key; emit one transition per real change.

    ``at_ms`` is when the change happened (the event's time, or the due time), recorded on
    the transition; ``now_ms`` is the clock that date math is evaluated against. With
    ``changed`` (the names an event changed), a segment that reads none of them, directly or
    through INCLUDE, keeps its stored membership without being evaluated.
    """
    segments = topology.segments_for(state.ref.key)
    if not segments:
        return []
    view = profile_view(state, topology, now_ms)
    results: dict[str, bool] = {}
    out = []
    for segment in segments:  # topological order: included segments come first
        if changed is not None and changed.isdisjoint(segment.deps):
            results[segment.id] = state.members.get(segment.id, False)
            continue
        member = _evaluate(segment, view, now_ms, _include_resolver(segment, results, topology))
        results[segment.id] = member
        was_member = state.members.get(segment.id, False)
        if member != was_member:
            state.set_member(segment.id, member)
            kind: TransitionKind = "enter" if member else "exit"
            out.append(_transition(state, segment, kind, cause, at_ms, view))
    return out


def next_due(state: EntityState, topology: Topology, now_ms: int) -> int | None:
    """The earliest moment at which time alone may flip one of the entity's segments."""
    segments = topology.segments_for(state.ref.key)
    if not segments:
        return None
    view = profile_view(state, topology, now_ms)
    due = [next_boundary(s.statement, view, now_ms=now_ms) for s in segments if s.uses_time]
    windowed = topology.next_window_change(state, now_ms)
    candidates = [d for d in (*due, windowed) if d is not None and d > now_ms]
    return min(candidates) if candidates else None


def _include_resolver(
    segment: CompiledSegment, results: dict[str, bool], topology: Topology
) -> Callable[[str], bool]:
    def resolve(ref: str) -> bool:
        target = topology.segment_by_ref(ref)
        return target is not None and results.get(target.id, False)

    return resolve


def _evaluate(
    segment: CompiledSegment, view: Mapping[str, Any], now_ms: int, include: Callable[[str], bool]
) -> bool:
    try:
        return bool(evaluate(segment.statement, view, now_ms=now_ms, resolve_include=include))
    except SegmentQLError:
        return False  # a runtime type problem in one profile never stops the worker


def _transition(
    state: EntityState,
    segment: CompiledSegment,
    kind: TransitionKind,
    cause: str,
    at_ms: int,
    view: Mapping[str, Any],
) -> Transition:
    return Transition(
        transition_id=transition_id(state.ref, segment.id, kind, cause),
        entity=state.ref,
        segment_id=segment.id,
        segment_slug=segment.slug,
        event=kind,
        at_ms=at_ms,
        identifiers=dict(state.identifiers) or {state.ref.key: state.ref.id},
        profile=dict(view),
    )
