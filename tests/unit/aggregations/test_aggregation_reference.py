"""The incremental state machines agree with the naive ``reference_value`` model.

Random event sequences (out of order, duplicates, unusable values) are applied through
``apply`` with orjson round-trips of the state at random steps, and every read at a random
time must equal ``reference_value`` over the events applied so far.
"""

from __future__ import annotations

import math
import random
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.domain.aggregations import (
    KINDS,
    AggSpec,
    apply,
    new_state,
    read,
    reference_value,
)

VALUES = ["a", "b", "c", "\x1fi1", "", 1, 2, 2.0, 2.5, -1, 0, True, False, None, math.inf,
          [1], {"k": 1}]  # fmt: skip
PERIODS = [None, 1500, 7000, 10_000, 60_000]


def same(got: Any, want: Any) -> bool:
    """Equality that keeps True apart from 1 and tolerates float summation order."""
    if type(got) is not type(want):
        return False
    if isinstance(got, float):
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(got, list):
        return len(got) == len(want) and all(map(same, got, want))
    if isinstance(got, dict):
        return list(got) == list(want) and all(same(got[k], want[k]) for k in got)
    return bool(got == want)


def assert_json_state(state: Any) -> None:
    if isinstance(state, list):
        for item in state:
            assert_json_state(item)
    elif isinstance(state, dict):
        for key, item in state.items():
            assert type(key) is str
            assert_json_state(item)
    else:
        assert state is None or type(state) in (str, int, float, bool)
        assert not (type(state) is float and not math.isfinite(state))


@st.composite
def specs(draw: st.DrawFn, periods: list[int | None] = PERIODS,
          defaults: tuple[Any, ...] = (None, 0, "n/a")) -> AggSpec:
    kind = draw(st.sampled_from(KINDS))
    period = draw(st.sampled_from(periods))
    ttl = draw(st.one_of(st.none(), st.integers(1, 20_000))) if period is None else None
    unit = draw(st.sampled_from(["s", "min"])) if kind.startswith("time_since_") else None
    default = draw(st.sampled_from(defaults))
    return AggSpec(kind, period_ms=period, ttl_ms=ttl, time_unit=unit, default_value=default)


operations = st.lists(
    st.one_of(
        st.tuples(st.just("event"), st.sampled_from(VALUES), st.integers(0, 4000),
                  st.integers(-12_000, 1000)),
        st.tuples(st.just("read"), st.integers(-3000, 150_000)),
        st.tuples(st.just("json")),
    ),
    max_size=60,
)  # fmt: skip


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs(), ops=operations)
def test_state_machine_matches_reference(spec: AggSpec, ops: list[tuple[Any, ...]]) -> None:
    state = new_state(spec)
    applied: list[tuple[Any, int]] = []
    clock, newest = 1_000_000, None
    for op in ops:
        if op[0] == "event":
            _, value, step, offset = op
            clock += step
            ts = clock + offset  # negative offsets arrive late, equal ts are duplicates
            state = apply(spec, state, value, ts)
            applied.append((value, ts))
            newest = ts if newest is None else max(newest, ts)
        elif op[0] == "json":
            state = orjson.loads(orjson.dumps(state))
        else:
            base = clock if newest is None else newest
            delta = op[1] if spec.period_ms is None else abs(op[1])  # windowed: now >= newest
            now = base + delta
            got, want = read(spec, state, now), reference_value(spec, applied, now)
            assert same(got, want), (got, want, now)
    assert_json_state(state)
    assert orjson.loads(orjson.dumps(state)) == state


def test_caps_and_sketch_phases_match_reference_on_long_random_streams() -> None:
    """Many distinct values: the 100-value caps and the HLL exact → sparse switch."""
    rng = random.Random(20260101)
    kinds = ["unique_list", "most_frequent", "least_frequent", "category_count",
             "approx_count_distinct"]  # fmt: skip
    for kind in kinds:
        for period in (None, 60_000, 600_000):
            spec = AggSpec(kind, period_ms=period)
            state, applied, ts = new_state(spec), [], 0
            for i in range(1500):
                ts += rng.randint(0, 400)
                value = f"v{int(rng.paretovariate(0.6)) % 400}" if i % 3 else rng.randint(0, 150)
                event_ts = ts - (rng.randint(0, 20_000) if rng.random() < 0.1 else 0)
                state = apply(spec, state, value, event_ts)
                applied.append((value, event_ts))
                if i % 97 == 0:
                    state = orjson.loads(orjson.dumps(state))
                if i % 50 == 49:
                    now = max(t for _, t in applied) + rng.randint(0, 30_000)
                    got, want = read(spec, state, now), reference_value(spec, applied, now)
                    assert same(got, want), (kind, period, i)
