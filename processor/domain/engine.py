"""Apply one event (or one due time) to one entity: profile, attributes, segments.

Pure and synchronous: the worker calls it on its in-process cache of entity state and writes
back what changed. The same function serves the reference path in tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from processor.domain import aggregations
from processor.domain.entity import EntityState
from processor.domain.events import Event
from processor.domain.topology import CompiledEventLog, CompiledSegment, Topology
from processor.domain.transitions import EntityRef, Transition, TransitionKind, transition_id
from processor.segmentql import SegmentQLError, next_boundary

LAST_ACTIVE_FIELD = "last_active_ts"


def entities_of(event: Event, topology: Topology) -> list[EntityRef]:
    """Every entity this event updates: one per attribute key in use that the event carries."""
    refs = []
    atomic = event.atomic
    for key in topology.keys:
        # ``key.value_of(event)``, its usual case (a built-in key's non-empty string) inline
        value = atomic.get(key.column) if key.column is not None else None
        if type(value) is not str or not value:
            value = key.value_of(event)
            if value is None:
                continue
        refs.append(EntityRef(key.name, value))
    return refs


def apply_event(
    state: EntityState, event: Event, topology: Topology, *, cause: str, now_ms: int,
    event_refs: list[EntityRef] | None = None,
) -> list[Transition]:
    """Fold ``event`` into ``state``; return the membership transitions it causes.

    ``cause`` (``topic/partition/offset``) makes transition ids deterministic, so replaying
    the same event after a crash yields the same ids. The caller checks and advances the
    offset watermark; this function does not look at offsets. Segments are re-evaluated only
    when the event changed something they read, or the entity is new (a segment can match a
    profile on missing fields alone); time alone is the scheduler's business (``next_due``).
    ``event_refs`` is ``entities_of(event, topology)`` when the caller has it already.
    """
    key = state.ref.key
    _add_event_identifiers(state, entities_of(event, topology) if event_refs is None else event_refs)
    fields = event.fields
    changed = _merge_fields(state, fields, event.timestamp_ms) if fields else set()
    if LAST_ACTIVE_FIELD not in fields:  # else the event states its own last activity
        ts = event.timestamp_ms
        current = state.profile.get(LAST_ACTIVE_FIELD)
        if current is None or not isinstance(current[0], int) or current[0] < ts:
            state.set_profile(LAST_ACTIVE_FIELD, ts, ts)
            changed.add(LAST_ACTIVE_FIELD)
    selection = topology.attributes_for(key, event)
    passed = selection.fold(state, event)  # the attributes: generated code (see ``folds``)
    if topology.event_logs:
        for log in topology.event_logs_for(key):
            _append_to_log(state, log, event)
    if not topology.segments:
        return []  # nothing reads what changed
    changed.update(selection.names)
    if passed:
        changed.update(a.name for a in passed)
    if state.stored and changed.isdisjoint(topology.segment_fields(key)):
        return []
    return evaluate_segments(state, topology, cause=cause, now_ms=now_ms, at_ms=event.timestamp_ms,
                             changed=changed if state.stored else None)


def _add_event_identifiers(state: EntityState, event_refs: list[EntityRef]) -> None:
    """Record the event's identifiers (its entities: one per attribute key in use it carries)
    on ``state``."""
    known = state.identifiers
    for key, value in event_refs:
        if known.get(key) != value:
            state.add_identifiers({key: value})


def _merge_fields(state: EntityState, fields: Mapping[str, Any], ts: int) -> set[str]:
    """Lytics-style profile: each top-level field of a generic event, last value wins by event
    time (a Snowplow event has none: its columns are ``atomic``); ``apply_event`` then sets the
    last activity, unless the event states its own (a profile field like any other). Returns
    the names whose value changed."""
    changed = set()
    for name, value in fields.items():
        if isinstance(value, dict):
            continue  # nested objects stay in the event; profiles hold scalar and list fields
        if state.set_profile(name, value, ts):
            changed.add(name)
    return changed


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


_UNSEEN: Any = object()  # ProfileView: a name not looked up yet
_ABSENT: Any = object()  # ProfileView: a name that is neither an attribute nor a profile field


class ProfileView(Mapping[str, Any]):
    """What a segment sees: profile fields, overridden by the entity's attribute values.

    Lazy and memoised: a name is looked up once per view, when a segment first asks for it
    (``in`` and ``[]`` alike: SegmentQL asks both), and an attribute is read
    (``aggregations.read``) only then. So the entity must not change while a view is in use:
    views live for one evaluation.
    """

    __slots__ = ("_state", "_attributes", "_now", "_seen", "_snapshot")

    def __init__(self, state: EntityState, topology: Topology, now_ms: int) -> None:
        self._state = state
        self._attributes = topology.attribute_index(state.ref.key)
        self._now = now_ms
        self._seen: dict[Any, Any] = {}  # name -> value, or _ABSENT
        self._snapshot: dict[str, Any] | None = None

    def _lookup(self, name: Any) -> Any:
        found = self._attributes.get(name)
        if found is not None:
            stored = self._state.attribute(found[0])
            if stored is not None:
                value = self._seen[name] = aggregations.read(found[1], stored, self._now)
                return value
        pair = self._state.profile.get(name)
        value = self._seen[name] = _ABSENT if pair is None else pair[0]
        return value

    def __getitem__(self, name: str) -> Any:
        value = self._seen.get(name, _UNSEEN)
        if value is _UNSEEN:
            value = self._lookup(name)
        if value is _ABSENT:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        value = self._seen.get(name, _UNSEEN)
        if value is _UNSEEN:
            value = self._lookup(name)
        return value is not _ABSENT

    def __iter__(self) -> Iterator[str]:
        names = dict.fromkeys(self._state.profile)
        names.update((n, None) for n, (slot, _) in self._attributes.items() if self._state.attribute(slot) is not None)
        return iter(names)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def snapshot(self) -> dict[str, Any]:
        """``dict(self)``, built once per view: every transition of one evaluation carries it.
        Shared: copy it before changing it."""
        if self._snapshot is None:
            # profile fields first, then the other attributes, in ``__iter__``'s order
            snapshot = {name: pair[0] for name, pair in self._state.profile.items()}
            seen = self._seen
            for name, (slot, spec) in self._attributes.items():
                state = self._state.attribute(slot)
                if state is not None:
                    value = seen.get(name, _UNSEEN)
                    if value is _UNSEEN:
                        value = seen[name] = aggregations.read(spec, state, self._now)
                    snapshot[name] = value
            self._snapshot = snapshot
        return self._snapshot


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
    include = _include_resolver(results, topology)
    members = state.members
    out = []
    for segment in segments:  # topological order: included segments come first
        was_member = members.get(segment.id, False)
        if changed is not None and changed.isdisjoint(segment.deps):
            results[segment.id] = was_member
            continue
        try:
            member = segment.test(view, now_ms, include) is True  # ``segmentql.evaluate``
        except SegmentQLError:
            member = False  # a runtime type problem in one profile never stops the worker
        results[segment.id] = member
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


def _include_resolver(results: dict[str, bool], topology: Topology) -> Callable[[str], bool]:
    def resolve(ref: str) -> bool:
        target = topology.segment_by_ref(ref)
        return target is not None and results.get(target.id, False)

    return resolve


def _transition(
    state: EntityState,
    segment: CompiledSegment,
    kind: TransitionKind,
    cause: str,
    at_ms: int,
    view: ProfileView,
) -> Transition:
    return Transition(
        transition_id=transition_id(state.ref, segment.id, kind, cause),
        entity=state.ref,
        segment_id=segment.id,
        segment_slug=segment.slug,
        event=kind,
        at_ms=at_ms,
        identifiers=dict(state.identifiers) or {state.ref.key: state.ref.id},
        profile=dict(view.snapshot()),
    )
