"""The generated folds (``domain.folds``) against ``aggregations.apply``, the state machine they
abbreviate: same states (as JSON, so 1 and 1.0 differ), same insertion order, same dirty marks,
for every kind, lifetime, with a TTL and windowed, with and without criteria; and the reads
still equal the reference model."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.domain import aggregations
from processor.domain.definitions import AttributeGroup
from processor.domain.entity import EntityState
from processor.domain.events import Event
from processor.domain.properties import matches_criteria
from processor.domain.topology import Selection, compile_group
from processor.domain.transitions import EntityRef

VALUE = {"type": "atomic", "name": "se_label"}
PRICE = {"type": "event", "vendor": "com.acme", "name": "buy", "major_version": 1, "path": "price"}
CRITERIA = {"all": [{"property": {"type": "atomic", "name": "se_category"}, "operator": "=",
                     "value": "yes"}]}  # fmt: skip
SHAPES = [{}, {"ttl": "PT5S"}, {"period": "PT10S"}, {"period": "PT1M"}]
VALUES = ["a", "b", "\x1fi1", "", 1, 2, 2.0, 2.5, -1, True, None, math.inf, math.nan, [1], {"k": 1}]


def attribute(kind: str, shape: dict[str, Any], criteria: bool, n: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": f"{kind}_{n}", "type": "string", "aggregation": kind, "events": [],
                           "property": PRICE if n % 2 else VALUE, **shape}
    if kind.startswith("time_since_"):
        doc.update(time_unit="s", type="double")
        del doc["property"]
    if criteria:
        doc["criteria"] = CRITERIA
    return doc


def every_attribute() -> list[Any]:
    docs = [attribute(kind, shape, criteria, n)
            for kind in aggregations.KINDS for n, shape in enumerate(SHAPES)
            for criteria in (False, True)]  # fmt: skip
    for i, doc in enumerate(docs):
        doc["name"] = f"a{i}_{doc['name']}"
    group = AttributeGroup.model_validate(
        {"name": "g", "version": 1, "attribute_key": {"name": "domain_userid"}, "attributes": docs})
    return list(compile_group(group).attributes)


ATTRIBUTES = every_attribute()

events_strategy = st.lists(
    st.tuples(st.sampled_from(VALUES), st.sampled_from(VALUES),
              # on a 2.5 s grid too: gaps of exactly the TTL, times on bucket edges
              st.one_of(st.integers(0, 200_000), st.integers(0, 80).map(lambda i: i * 2500)),
              st.booleans(), st.booleans()),
    max_size=40,
)


def event(value: Any, price: Any, ts: int, tagged: bool, with_unstruct: bool) -> Event:
    atomic: dict[str, Any] = {"domain_userid": "u"}
    if value is not None:
        atomic["se_label"] = value
    if tagged:
        atomic["se_category"] = "yes"
    unstruct = {"schema": "iglu:com.acme/buy/jsonschema/1-0-0", "data": {"price": price}}
    return Event("e", ts, "buy", "com.acme", "1-0-0", atomic, unstruct if with_unstruct else None)


def by_reference(state: EntityState, ev: Event, selection: Selection) -> None:
    """The engine's fold before code generation: ``aggregations.apply`` per attribute."""
    def fold(attributes: Any) -> None:
        for a in attributes:
            value = a.value_of(ev) if a.spec.uses_value else None
            current = state.attribute(a.slot)
            state.set_attribute(a.slot, aggregations.apply(a.spec, current, value, ev.timestamp_ms))

    fold(selection.plain)
    passed = [a for a in selection.conditional if matches_criteria(ev, a.criteria)]
    if passed:
        fold(passed)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=events_strategy, roundtrip=st.integers(0, 40))
def test_generated_fold_equals_the_state_machine(events: list[Any], roundtrip: int) -> None:
    selection = Selection.of(ATTRIBUTES)
    mine, theirs = EntityState(EntityRef("domain_userid", "u")), EntityState(EntityRef("domain_userid", "u"))
    for i, spec in enumerate(events):
        ev = event(*spec)
        passed = selection.fold(mine, ev)
        by_reference(theirs, ev, selection)
        assert [a.slot for a in passed] == [a.slot for a in selection.conditional
                                            if matches_criteria(ev, a.criteria)]
        if i == roundtrip:  # states loaded from Redis are plain JSON, not the objects built here
            mine.groups = {k: orjson.loads(orjson.dumps(v)) for k, v in mine.groups.items()}
    assert list(mine.attributes()) == list(theirs.attributes())
    for slot, state in theirs.attributes().items():
        assert orjson.dumps(mine.attribute(slot)) == orjson.dumps(state), slot
    assert mine.dirty_group_keys() == theirs.dirty_group_keys()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=events_strategy)
def test_generated_fold_reads_as_the_reference_model(events: list[Any]) -> None:
    selection = Selection.of(ATTRIBUTES)
    state = EntityState(EntityRef("domain_userid", "u"))
    applied = [event(*spec) for spec in events]
    for ev in applied:
        selection.fold(state, ev)
    now = max((ev.timestamp_ms for ev in applied), default=0)
    for a in ATTRIBUTES:
        taken = [(a.value_of(ev) if a.spec.uses_value else None, ev.timestamp_ms)
                 for ev in applied if matches_criteria(ev, a.criteria)]
        stored = state.attribute(a.slot)
        got = a.spec.default_value if stored is None else aggregations.read(a.spec, stored, now)
        want = aggregations.reference_value(a.spec, taken, now)
        assert orjson.dumps(got) == orjson.dumps(want) or _close(got, want), (a.name, got, want)


def _close(got: Any, want: Any) -> bool:
    return isinstance(got, float) and isinstance(want, float) and math.isclose(got, want, rel_tol=1e-9)


def test_attribute_names_reach_the_source_only_through_repr() -> None:
    """Names are validated, but the generator does not rely on it: a name holding a newline
    and code stays inside a comment."""
    hostile = dataclasses.replace(ATTRIBUTES[0], name="x\nraise SystemExit")
    selection = Selection.of([hostile])
    state = EntityState(EntityRef("domain_userid", "u"))
    selection.fold(state, event("a", 1, 1000, False, False))
    assert state.attribute(hostile.slot) == [1000, 1]  # ATTRIBUTES[0] is a lifetime counter


def test_generated_fold_equals_the_state_machine_through_every_sketch_mode() -> None:
    """Enough distinct values to take approx_count_distinct from exact through sparse to dense
    (the inline code handles only the exact mode itself), values repeated on the way."""
    sketches = [a for a in ATTRIBUTES if a.spec.kind == "approx_count_distinct"]
    selection = Selection.of(sketches)
    mine, theirs = EntityState(EntityRef("domain_userid", "u")), EntityState(EntityRef("domain_userid", "u"))
    for i in range(3000):
        value = f"v{i // 2}" if i % 3 else f"v{i % 50}"
        ev = event(value, i, 1000 + i * 7, i % 2 == 0, True)
        selection.fold(mine, ev)
        by_reference(theirs, ev, selection)
    modes = {mine.attribute(a.slot)[-1][1][0] if a.spec.period_ms else mine.attribute(a.slot)[1][0]
             for a in sketches}
    assert 2 in modes  # dense reached
    for slot, state in theirs.attributes().items():
        assert orjson.dumps(mine.attribute(slot)) == orjson.dumps(state), slot
