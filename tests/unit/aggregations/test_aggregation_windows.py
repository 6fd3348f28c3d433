"""Rolling windows (``period``): bucket rule, decay, late events, bounded state."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.domain.aggregations import AggSpec, apply, is_too_late, new_state, read
from processor.domain.windows import bucket_width_ms, in_window, span_buckets

MIN = 60_000
TEN_MIN = 10 * MIN
DAY = 86_400_000


def feed(spec: AggSpec, events: list[tuple[Any, int]]) -> list[Any]:
    state = new_state(spec)
    for value, ts in events:
        state = apply(spec, state, value, ts)
    return state


@pytest.mark.parametrize(
    ("period", "width"),
    [
        (TEN_MIN, 10_000),
        (3_600_000, MIN),
        (7 * DAY, 10_080_000),
        (30 * DAY, 43_200_000),
        (30_000, 1000),
        (1500, 500),
        (61_000, 1000),
        (500, 500),
        (1_000_003, 16_000),  # prime-ish period: no aligned width, so 63 unaligned buckets
    ],
)
def test_bucket_width_rule(period: int, width: int) -> None:
    assert bucket_width_ms(period) == width
    assert span_buckets(period, width) <= 240


@given(
    period=st.integers(1, 40 * DAY),
    ts=st.integers(-(10**13), 10**13),
    delta=st.integers(-(10**11), 10**11),
)
def test_window_edges_are_at_most_one_bucket_early_and_never_late(
    period: int, ts: int, delta: int
) -> None:
    width = bucket_width_ms(period)
    now = ts + delta
    inside = in_window(ts, period, width, now)
    if inside:
        assert now - period < ts  # never counts an event older than the period
        assert ts < (now // width + 1) * width  # at most now's bucket ahead
    if now - period + width <= ts <= now:
        assert inside  # leaves the window at most one bucket early


def test_counter_decays_without_new_events() -> None:
    spec = AggSpec("counter", period_ms=TEN_MIN, default_value=0)
    state = feed(spec, [(None, t) for t in range(0, TEN_MIN, MIN)])  # 0, 1 min, .. 9 min
    assert read(spec, state, TEN_MIN - 1) == 10
    assert read(spec, state, TEN_MIN) == 9  # the event at 0 is now exactly period old
    assert read(spec, state, TEN_MIN + 5 * MIN) == 4
    assert read(spec, state, 2 * TEN_MIN) == 0  # empty window: the default
    assert read(AggSpec("counter", period_ms=TEN_MIN), state, 2 * TEN_MIN) is None


def test_trailing_edge_drops_the_whole_bucket_at_once() -> None:
    spec = AggSpec("counter", period_ms=TEN_MIN)  # 10 s buckets
    state = feed(spec, [(None, 1000), (None, 9999)])
    assert read(spec, state, TEN_MIN - 1) == 2
    # an exact window would keep the 9 999 event until 609 999; its bucket leaves at 600 000
    assert read(spec, state, TEN_MIN) is None


def test_event_after_now_in_the_current_bucket_is_counted() -> None:
    spec = AggSpec("counter", period_ms=TEN_MIN)
    state = feed(spec, [(None, 25_000)])
    assert read(spec, state, 20_000) == 1
    assert read(spec, state, 19_999) is None


WINDOW_EVENTS = [("/a", 0), ("/b", 20_000), ("/a", 40_000), ("/c", 300_000)]


@pytest.mark.parametrize(
    ("kind", "at_610s", "at_645s"),
    [
        ("counter", 3, 1),  # at 610 s the window is buckets 2..61: /b, /a (40 s), /c
        ("first", "/b", "/c"),
        ("last", "/c", "/c"),
        ("unique_list", ["/b", "/a", "/c"], ["/c"]),
        ("most_frequent", "/b", "/c"),  # 1 each: the earliest tracked wins the tie
        ("least_frequent", "/b", "/c"),
        ("category_count", {"/b": 1, "/a": 1, "/c": 1}, {"/c": 1}),
        ("approx_count_distinct", 3, 1),
    ],
)
def test_windowed_value_kinds(kind: str, at_610s: Any, at_645s: Any) -> None:
    spec = AggSpec(kind, period_ms=TEN_MIN)
    state = feed(spec, WINDOW_EVENTS)
    assert read(spec, state, 610_000) == at_610s
    assert read(spec, state, 645_000) == at_645s
    assert read(spec, state, 910_000) is None


@pytest.mark.parametrize(
    ("kind", "at_610s", "at_645s"),
    [("sum", 8, 7), ("min", 1, 7), ("max", 7, 7), ("mean", 4.0, 7.0)],
)
def test_windowed_numeric_kinds(kind: str, at_610s: Any, at_645s: Any) -> None:
    spec = AggSpec(kind, period_ms=TEN_MIN)
    state = feed(spec, [(5, 0), (1, 20_000), (7, 300_000)])
    assert read(spec, state, 610_000) == at_610s
    assert read(spec, state, 645_000) == at_645s


def test_windowed_time_since() -> None:
    events = [(None, 300_000), (None, 20_000), (None, 0)]
    first = AggSpec("time_since_first", period_ms=TEN_MIN, time_unit="s")
    last = AggSpec("time_since_last", period_ms=TEN_MIN, time_unit="s")
    assert read(first, feed(first, events), 610_000) == 590.0
    assert read(last, feed(last, events), 610_000) == 310.0
    assert read(first, feed(first, events), 645_000) == 345.0


def test_unique_list_merges_recency_across_buckets() -> None:
    spec = AggSpec("unique_list", period_ms=TEN_MIN)
    state = feed(spec, [("/home", 30_000), ("/products", 10_000), ("/home", 5_000)])
    assert read(spec, state, 40_000) == ["/products", "/home"]  # out of order arrivals
    state = apply(spec, state, "/products", 50_000)
    assert read(spec, state, 50_000) == ["/home", "/products"]


def test_late_event_inside_the_window_counts_and_too_old_is_ignored() -> None:
    spec = AggSpec("counter", period_ms=TEN_MIN)
    state = feed(spec, [(None, 700_000)])
    state = apply(spec, state, None, 200_000)  # late but inside the window at 700 s
    assert read(spec, state, 700_000) == 2
    before = orjson.dumps(state)
    state = apply(spec, state, None, 99_999)  # bucket 9 <= 70 - 60: outside every window
    assert orjson.dumps(state) == before
    assert read(spec, state, 700_000) == 2


def test_state_stays_bounded_as_time_passes() -> None:
    spec = AggSpec("category_count", period_ms=TEN_MIN)
    state = new_state(spec)
    for i in range(10_000):
        state = apply(spec, state, f"v{i % 7}", i * 997)
    assert len(state) <= spec.span + 1
    assert sum(read(spec, state, 9_999 * 997).values()) == len(
        [i for i in range(10_000) if in_window(i * 997, TEN_MIN, spec.bucket_ms, 9_999 * 997)]
    )


def test_is_too_late() -> None:
    spec = AggSpec("counter", period_ms=TEN_MIN)
    assert not is_too_late(spec, 990_000, 1_000_000, lateness_ms=60_000)
    assert is_too_late(spec, 930_000, 1_000_000, lateness_ms=60_000)  # beyond lateness
    # within lateness but its bucket already left the window at now
    assert is_too_late(spec, 405_000, 1_000_000, lateness_ms=TEN_MIN * 2)
    assert not is_too_late(spec, 410_000, 1_000_000, lateness_ms=TEN_MIN * 2)
    lifetime = AggSpec("first")
    assert not is_too_late(lifetime, 0, 1_000_000, lateness_ms=TEN_MIN * 2)
    assert is_too_late(lifetime, 0, 1_000_000, lateness_ms=1000)


@pytest.mark.parametrize("kind", ["unique_list", "most_frequent", "approx_count_distinct", "mean"])
def test_windowed_states_round_trip_through_orjson(kind: str) -> None:
    spec = AggSpec(kind, period_ms=TEN_MIN)
    state = feed(spec, [(v, t * 7_000) for t, v in enumerate(["a", 1, "b", 2.5, "a", True])])
    loaded = orjson.loads(orjson.dumps(state))
    assert loaded == state
    assert read(spec, loaded, 50_000) == read(spec, state, 50_000)
    assert apply(spec, loaded, "c", 51_000) == apply(spec, state, "c", 51_000)
