"""Published definitions compiled once into frozen, ready-to-run form.

Workers rebuild a ``Topology`` whenever the registry version changes; the hot path only ever
reads these objects, never raw definition dicts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from processor.domain import aggregations, decay, folds, properties
from processor.domain.definitions import (
    AtomicProperty,
    Attribute,
    AttributeGroup,
    AttributeKey,
    Criteria,
    EventLog,
    EventSelection,
    output_key,
    resolve_attribute_key,
)
from processor.domain.entity import EntityState
from processor.domain.events import Event
from processor.domain.segments import SegmentDefinition
from processor.errors import DefinitionError
from processor.segmentql import Statement, included_segments, parse, referenced_fields, uses_time
from processor.segmentql.compiler import Node, compiled


@dataclass(frozen=True, slots=True)
class KeyDef:
    """An attribute key in use: how to find the entity id of an event.

    ``column`` is the atomic column of a built-in key (None for a custom key's property).
    """

    name: str
    definition: AttributeKey
    column: str | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        column = self.definition.source_field() if self.definition.property is None else None
        object.__setattr__(self, "column", column)  # frozen: derived once, here

    def value_of(self, event: Event) -> str | None:
        if self.column is not None:
            value = event.atomic.get(self.column)
            if type(value) is str:  # the common case, called twice per event: skip the general rules
                return value or None
        return properties.attribute_key_value(event, self.definition)


@dataclass(frozen=True, slots=True)
class CompiledAttribute:
    """One attribute ready for the hot path: which events it takes and how to read its value.

    ``value_key`` names the property (equal properties share it), so a group resolves each
    distinct property once per event; ``atomic`` is set for a plain atomic column, read
    straight from the event. ``slot`` is where the entity keeps its state
    (``EntityState.groups[slot[:2]][slot[2]]``); ``criteria`` is the definition's, None when
    there is none.
    """

    name: str
    spec: aggregations.AggSpec
    definition: Attribute
    value_key: str
    atomic: str | None
    slot: tuple[str, int, str]
    criteria: Criteria | None = None
    # ``value_of``: the property's compiled resolver (``properties.compile_resolver``)
    value_of: Callable[[Event], Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        prop = self.definition.property
        resolver = _no_value if prop is None else properties.compile_resolver(prop)
        object.__setattr__(self, "value_of", resolver)  # frozen: derived once, here

    def selects(self, event: Event) -> bool:
        return properties.matches_events(event, self.definition.events)

    def passes_criteria(self, event: Event) -> bool:
        return self.criteria is None or properties.matches_criteria(event, self.criteria)


def _no_value(_event: Event) -> Any:
    return None


@dataclass(frozen=True, slots=True)
class Selection:
    """The attributes of one entity key that take one kind of event, as the engine folds them.

    ``plain`` ones have no criteria: every such event updates them, so their slots, names and
    groups are listed here once (the engine marks their groups in bulk). ``conditional`` ones apply only to
    the events that pass their criteria. ``fold`` is the generated function that applies an
    event to all of them (see ``folds``).
    """

    plain: tuple[CompiledAttribute, ...]
    conditional: tuple[CompiledAttribute, ...]
    slots: tuple[tuple[str, int, str], ...]
    names: tuple[str, ...]
    groups: tuple[tuple[str, int], ...]  # of the plain attributes, distinct, in order
    fold: folds.Fold = field(compare=False, repr=False)

    @classmethod
    def of(cls, attributes: Iterable[CompiledAttribute]) -> Selection:
        attributes = tuple(attributes)
        plain = tuple(a for a in attributes if a.criteria is None)
        conditional = tuple(a for a in attributes if a.criteria is not None)
        return cls(plain, conditional, tuple(a.slot for a in plain), tuple(a.name for a in plain),
                   tuple(dict.fromkeys(a.slot[:2] for a in plain)), folds.compile_fold(plain, conditional))


@dataclass(frozen=True, slots=True)
class CompiledGroup:
    name: str
    version: int
    key: str
    attributes: tuple[CompiledAttribute, ...]
    # Attributes whose event selectors take events of one (name, vendor, version): selector
    # matching runs once per kind of event, not once per event. Off when a selector names an
    # event specification (that depends on the event's entities).
    cacheable: bool = True
    _by_kind: dict[tuple[str | None, str | None, str | None], tuple[CompiledAttribute, ...]] = field(
        default_factory=dict, compare=False, repr=False)

    def attributes_for(self, event: Event) -> tuple[CompiledAttribute, ...]:
        if not self.cacheable:
            return tuple(a for a in self.attributes if a.selects(event))
        kind = (event.name, event.vendor, event.version)
        selected = self._by_kind.get(kind)
        if selected is None:
            if len(self._by_kind) > 10_000:
                self._by_kind.clear()
            selected = self._by_kind[kind] = tuple(a for a in self.attributes if a.selects(event))
        return selected


@dataclass(frozen=True, slots=True)
class CompiledSegment:
    id: str
    slug: str
    key: str
    statement: Statement
    fields: frozenset[str]
    includes: frozenset[str]
    uses_time: bool
    # fields read by this segment or any segment it includes, transitively
    deps: frozenset[str] = frozenset()
    # ``test(profile, now_ms, resolve_include) is True``: ``segmentql.evaluate`` without
    # looking up the compiled form of the statement on every evaluation
    test: Node = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "test", compiled(self.statement))  # frozen: derived once, here


@dataclass(frozen=True, slots=True)
class CompiledEventLog:
    """An agentic-context buffer: which events to keep, projected to which properties."""

    name: str
    key: str
    selections: tuple[EventSelection, ...]
    max_events: int
    max_age_ms: int

    def entry(self, event: Event) -> dict[str, Any] | None:
        """The projected entry for ``event``, or None when no selection takes it."""
        for selection in self.selections:
            if properties.selector_matches(event, selection.event):
                projected = {output_key(p): properties.resolve(event, p) for p in selection.properties}
                return {"ts": event.timestamp_ms, "event": event.name, "properties": projected}
        return None


@dataclass(frozen=True)
class Topology:
    version: int = 0
    keys: tuple[KeyDef, ...] = ()
    groups: tuple[CompiledGroup, ...] = ()
    segments: tuple[CompiledSegment, ...] = ()
    event_logs: tuple[CompiledEventLog, ...] = ()
    _groups_by_key: dict[str, tuple[CompiledGroup, ...]] = field(default_factory=dict)
    _segments_by_key: dict[str, tuple[CompiledSegment, ...]] = field(default_factory=dict)
    _segment_refs: dict[str, CompiledSegment] = field(default_factory=dict)
    _segment_fields: dict[str, frozenset[str]] = field(default_factory=dict)
    _attribute_index: dict[str, dict[str, tuple[tuple[str, int, str], aggregations.AggSpec]]] = field(
        default_factory=dict)
    _event_logs_by_key: dict[str, tuple[CompiledEventLog, ...]] = field(default_factory=dict)
    # (key, event name, vendor, version) -> the attributes of the key's groups taking such events
    _selected: dict[tuple[str, str | None, str | None, str | None], Selection] = field(
        default_factory=dict, compare=False, repr=False)
    # the slots of a selection -> the selection: kinds of events that take the same attributes
    # share one (its fold is generated code, built once)
    _selections: dict[tuple[tuple[str, int, str], ...], Selection] = field(
        default_factory=dict, compare=False, repr=False)

    def groups_for(self, key: str) -> tuple[CompiledGroup, ...]:
        return self._groups_by_key.get(key, ())

    def attributes_for(self, key: str, event: Event) -> Selection:
        """The attributes of ``key``'s groups that take ``event``.

        Cached per kind of event, like ``CompiledGroup.attributes_for``, unless a group's
        selectors depend on more than the kind."""
        kind = (key, event.name, event.vendor, event.version)
        selected = self._selected.get(kind)
        if selected is None:
            groups = self.groups_for(key)
            attributes = tuple(a for group in groups for a in group.attributes_for(event))
            slots = tuple(a.slot for a in attributes)
            selected = self._selections.get(slots)
            if selected is None:
                if len(self._selections) > 10_000:
                    self._selections.clear()
                selected = self._selections[slots] = Selection.of(attributes)
            if all(group.cacheable for group in groups):
                if len(self._selected) > 10_000:
                    self._selected.clear()
                self._selected[kind] = selected
        return selected

    def event_logs_for(self, key: str) -> tuple[CompiledEventLog, ...]:
        return self._event_logs_by_key.get(key, ())

    def segments_for(self, key: str) -> tuple[CompiledSegment, ...]:
        return self._segments_by_key.get(key, ())

    def segment_fields(self, key: str) -> frozenset[str]:
        """Every field or attribute name the segments of ``key`` read."""
        return self._segment_fields.get(key, frozenset())

    def attribute_index(self, key: str) -> dict[str, tuple[tuple[str, int, str], aggregations.AggSpec]]:
        """Attribute name -> (state slot, spec) for the groups of ``key`` (later groups win)."""
        return self._attribute_index.get(key, {})

    def segment_by_ref(self, ref: str) -> CompiledSegment | None:
        """A segment by id or slug, as INCLUDE and subscriptions name them."""
        return self._segment_refs.get(ref)

    def next_window_change(self, state: EntityState, now_ms: int) -> int | None:
        """When a windowed attribute of the entity next decays (None: none of them will)."""
        soonest: int | None = None
        watched = self.segment_fields(state.ref.key)
        for group in self.groups_for(state.ref.key):
            for attribute in group.attributes:
                if attribute.name not in watched:
                    continue  # no segment reads it: its decay cannot change a membership
                stored = state.attribute((group.name, group.version, attribute.name))
                if stored is None:
                    continue
                due = decay.next_change(attribute.spec, stored, now_ms)
                if due is not None and (soonest is None or due < soonest):
                    soonest = due
        return soonest


def compile_topology(
    version: int,
    groups: Iterable[AttributeGroup],
    segments: Iterable[SegmentDefinition],
    custom_keys: Iterable[AttributeKey] = (),
    event_logs: Iterable[EventLog] = (),
) -> Topology:
    """Compile published definitions; raise ``DefinitionError`` for what cannot run."""
    groups = tuple(groups)
    compiled_groups = tuple(compile_group(g) for g in groups)
    compiled_segments = _order_segments([_compile_segment(s) for s in segments])
    known = {k.name: k for k in custom_keys}
    for definition in groups:  # a group body may carry its custom key inline (never POSTed alone)
        if definition.attribute_key.property is not None:
            known.setdefault(definition.attribute_key.name, definition.attribute_key)
    logs = tuple(
        CompiledEventLog(log.name, log.attribute_key.name, tuple(log.events), log.max_events,
                         log.max_age_seconds * 1000)
        for log in event_logs
    )
    keys = _keys(compiled_groups, compiled_segments, known, tuple(log.key for log in logs))
    by_key: dict[str, list[CompiledGroup]] = {}
    for group in compiled_groups:
        by_key.setdefault(group.key, []).append(group)
    seg_by_key: dict[str, list[CompiledSegment]] = {}
    refs: dict[str, CompiledSegment] = {}
    for segment in compiled_segments:
        seg_by_key.setdefault(segment.key, []).append(segment)
        refs[segment.id] = segment
        refs[segment.slug] = segment
    fields_by_key: dict[str, frozenset[str]] = {}
    for segment in compiled_segments:
        fields_by_key[segment.key] = fields_by_key.get(segment.key, frozenset()) | segment.fields
    index: dict[str, dict[str, tuple[tuple[str, int, str], aggregations.AggSpec]]] = {}
    for group in compiled_groups:
        for attribute in group.attributes:
            slot = (group.name, group.version, attribute.name)
            index.setdefault(group.key, {})[attribute.name] = (slot, attribute.spec)
    return Topology(
        version=version,
        keys=keys,
        groups=compiled_groups,
        segments=compiled_segments,
        event_logs=logs,
        _groups_by_key={k: tuple(v) for k, v in by_key.items()},
        _segments_by_key={k: tuple(v) for k, v in seg_by_key.items()},
        _segment_refs=refs,
        _segment_fields=fields_by_key,
        _attribute_index=index,
        _event_logs_by_key={key.name: tuple(log for log in logs if log.key == key.name) for key in keys},
    )


def compile_group(group: AttributeGroup) -> CompiledGroup:
    """A group ready to run (and to read: readers use the same specs and entity key)."""
    attributes = tuple(_compile_attribute(a, group) for a in group.attributes or ())
    cacheable = not any(s.event_specification_id for a in attributes for s in a.definition.events)
    return CompiledGroup(group.name, group.version, entity_key_of(group), attributes, cacheable)


def _compile_attribute(attribute: Attribute, group: AttributeGroup) -> CompiledAttribute:
    prop = attribute.property
    plain_atomic = isinstance(prop, AtomicProperty) and prop.date_part is None
    value_key = "" if prop is None else prop.model_dump_json()
    return CompiledAttribute(attribute.name, spec_for(attribute, group), attribute, value_key,
                             prop.name if plain_atomic else None,  # type: ignore[union-attr]
                             (group.name, group.version, attribute.name), attribute.criteria)


def entity_key_of(group: AttributeGroup) -> str:
    """The key name of the entities a group's values are stored under. Deprecated aliases
    (``user``, ``session``) share the entities of the key they stand for."""
    key = resolve_attribute_key(group.attribute_key)
    return key.name if key.property is not None else key.source_field()


def spec_for(attribute: Attribute, group: AttributeGroup) -> aggregations.AggSpec:
    """TTL precedence: attribute -> group -> attribute key; windowed attributes have none."""
    ttl_fallback = group.ttl or group.attribute_key.ttl
    ttl = None if attribute.period is not None else (attribute.ttl or ttl_fallback)
    return aggregations.AggSpec(
        kind=str(attribute.aggregation),
        period_ms=_ms(attribute.period),
        ttl_ms=_ms(ttl),
        time_unit=attribute.time_unit,
        default_value=attribute.default_value,
    )


def _ms(delta: timedelta | None) -> int | None:
    return None if delta is None else int(delta.total_seconds() * 1000)


def _compile_segment(segment: SegmentDefinition) -> CompiledSegment:
    statement = parse(segment.segment_ql)
    return CompiledSegment(
        id=segment.id,
        slug=segment.slug_name,
        key=segment.attribute_key,
        statement=statement,
        fields=frozenset(referenced_fields(statement)),
        includes=frozenset(included_segments(statement)),
        uses_time=uses_time(statement),
    )


def _order_segments(segments: list[CompiledSegment]) -> tuple[CompiledSegment, ...]:
    """Included segments before the ones that include them; a cycle or unknown ref is refused."""
    refs = {s.id: s for s in segments} | {s.slug: s for s in segments}
    ordered: list[CompiledSegment] = []
    state: dict[str, str] = {}
    done: dict[str, CompiledSegment] = {}

    def visit(segment: CompiledSegment, path: tuple[str, ...]) -> None:
        mark = state.get(segment.id)
        if mark == "done":
            return
        if mark == "visiting":
            raise DefinitionError(f"INCLUDE cycle: {' -> '.join((*path, segment.slug))}")
        state[segment.id] = "visiting"
        for ref in sorted(segment.includes):
            target = refs.get(ref)
            if target is None:
                raise DefinitionError(f"segment {segment.slug!r} includes unknown segment {ref!r}")
            visit(target, (*path, segment.slug))
        state[segment.id] = "done"
        deps = segment.fields.union(*(done[refs[r].id].deps for r in segment.includes))
        done[segment.id] = replace(segment, deps=deps)
        ordered.append(done[segment.id])

    for segment in segments:
        visit(segment, ())
    return tuple(ordered)


def _keys(
    groups: tuple[CompiledGroup, ...],
    segments: tuple[CompiledSegment, ...],
    custom: dict[str, AttributeKey],
    extra: tuple[str, ...] = (),
) -> tuple[KeyDef, ...]:
    """Keys by name: a published custom key, else a built-in (aliases resolved), else a field
    of that name (Lytics identity fields such as ``email``)."""
    names = dict.fromkeys([g.key for g in groups] + [s.key for s in segments] + list(extra))
    return tuple(
        KeyDef(name, custom.get(name) or resolve_attribute_key(AttributeKey(name=name)))
        for name in names
    )
