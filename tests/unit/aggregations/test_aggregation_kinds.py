"""Hand cases from signals-api §3.1 for every aggregation, lifetime (no period)."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from processor.domain.aggregations import MAX_TRACKED, AggSpec, apply, new_state, read


def feed(spec: AggSpec, events: list[tuple[Any, int]]) -> list[Any]:
    state = new_state(spec)
    for value, ts in events:
        state = apply(spec, state, value, ts)
    return state


def value_of(spec: AggSpec, events: list[tuple[Any, int]], now: int = 10**9) -> Any:
    return read(spec, feed(spec, events), now)


def at_times(values: list[Any], start: int = 1000) -> list[tuple[Any, int]]:
    return [(v, start + i * 1000) for i, v in enumerate(values)]


def test_counter_counts_events_and_ignores_value() -> None:
    spec = AggSpec("counter")
    assert value_of(spec, at_times([None, "x", 3])) == 3


def test_no_event_reads_default_or_none() -> None:
    assert read(AggSpec("counter"), new_state(AggSpec("counter")), 5) is None
    spec = AggSpec("counter", default_value=0)
    assert read(spec, new_state(spec), 5) == 0
    spec = AggSpec("unique_list", default_value=[])
    assert read(spec, feed(spec, at_times([None, {"a": 1}, [1]])), 10**6) == []


def test_sum_ignores_non_numeric_values() -> None:
    values = [1, 2.5, "3", True, None, math.inf, math.nan, [4]]
    assert value_of(AggSpec("sum"), at_times(values)) == 3.5
    assert value_of(AggSpec("sum", default_value=0), at_times(["1", False])) == 0


def test_min_max_mean() -> None:
    events = at_times([4, -2.5, "9", 10, False])
    assert value_of(AggSpec("min"), events) == -2.5
    assert value_of(AggSpec("max"), events) == 10
    assert value_of(AggSpec("mean"), events) == pytest.approx(11.5 / 3)
    assert value_of(AggSpec("mean"), at_times(["a"])) is None


def test_first_last_follow_event_time_not_arrival() -> None:
    events = [("a", 100), ("b", 50), ("c", 200), ("d", 150)]
    assert value_of(AggSpec("first"), events) == "b"
    assert value_of(AggSpec("last"), events) == "c"


def test_first_last_ties_keep_first_applied_and_take_last_applied() -> None:
    events = [("x", 100), ("y", 100), ("z", 100)]
    assert value_of(AggSpec("first"), events) == "x"
    assert value_of(AggSpec("last"), events) == "z"


def test_first_last_skip_missing_but_keep_falsy_values() -> None:
    events = [(None, 10), (0, 20), (False, 30), (None, 40)]
    assert value_of(AggSpec("first"), events) == 0
    assert value_of(AggSpec("last"), events) is False


def test_unique_list_spec_example_moves_reseen_value_to_end() -> None:
    spec = AggSpec("unique_list")
    assert value_of(spec, at_times(["/home", "/products", "/home"])) == ["/products", "/home"]


def test_unique_list_orders_by_event_time_when_out_of_order() -> None:
    spec = AggSpec("unique_list")
    assert value_of(spec, [("/a", 300), ("/b", 100)]) == ["/b", "/a"]
    # an older sighting of /a does not make it more recent than /b
    assert value_of(spec, [("/a", 300), ("/b", 200), ("/a", 100)]) == ["/b", "/a"]
    assert value_of(spec, [("/a", 100), ("/b", 300), ("/c", 200)]) == ["/a", "/c", "/b"]
    # equal event times: the later applied sighting counts as more recent
    assert value_of(spec, [("/a", 100), ("/b", 200), ("/c", 100)]) == ["/a", "/c", "/b"]
    events = [("/a", 100), ("/c", 100), ("/b", 200), ("/a", 100)]
    assert value_of(spec, events) == ["/c", "/a", "/b"]


def test_unique_list_cap_evicts_least_recently_seen() -> None:
    spec = AggSpec("unique_list")
    values = [f"v{i}" for i in range(MAX_TRACKED + 1)]
    result = value_of(spec, at_times(values))
    assert len(result) == MAX_TRACKED
    assert result == values[1:]
    # a value older than all 100 kept ones is not added
    state = feed(spec, at_times(values))
    state = apply(spec, state, "ancient", 0)
    assert "ancient" not in read(spec, state, 10**9)


def test_unique_list_keeps_types_apart_and_merges_equal_numbers() -> None:
    spec = AggSpec("unique_list")
    assert value_of(spec, at_times([1, "1", True, 1.0, 2.5, "\x1fi1"])) == [
        "1", True, 1, 2.5, "\x1fi1"
    ]  # fmt: skip


def test_most_and_least_frequent() -> None:
    events = at_times(["a", "b", "b", "c", "c", "c", "d"])
    assert value_of(AggSpec("most_frequent"), events) == "c"
    assert value_of(AggSpec("least_frequent"), events) == "a"  # tie a/d: tracked first


def test_most_frequent_with_date_part_integers() -> None:
    assert value_of(AggSpec("most_frequent"), at_times([13, 14, 13, 9])) == 13


def test_frequency_cap_evicts_least_frequent_for_the_101st_value() -> None:
    values = [f"v{i}" for i in range(MAX_TRACKED)] * 2
    values.remove("v50")  # v50 now seen once, every other value twice
    events = at_times([*values, "new"])
    assert value_of(AggSpec("least_frequent"), events) == "new"
    counts = value_of(AggSpec("category_count"), events)
    assert "v50" not in counts and counts["new"] == 1 and len(counts) == MAX_TRACKED


def test_category_count_sorted_by_count_with_string_labels() -> None:
    spec = AggSpec("category_count")
    result = value_of(spec, at_times(["a", "b", "a", 7, 7.0, 7, True]))
    assert result == {"7": 3, "a": 2, "b": 1, "true": 1}
    assert list(result) == ["7", "a", "b", "true"]


def test_approx_count_distinct_is_exact_while_small() -> None:
    spec = AggSpec("approx_count_distinct")
    assert value_of(spec, at_times(["a", "b", "a", 1, "1", 1.0, None, True])) == 5
    assert value_of(AggSpec("approx_count_distinct", default_value=0), []) == 0


@pytest.mark.parametrize(
    ("unit", "since_last", "since_first"),
    [("s", 60.0, 64.0), ("min", 1.0, 64.0 / 60), ("h", 1 / 60, 64.0 / 3600)],
)
def test_time_since_in_time_unit(unit: str, since_last: float, since_first: float) -> None:
    events = [(None, 5000), ("x", 1000)]
    assert value_of(AggSpec("time_since_last", time_unit=unit), events, 65000) == since_last
    assert value_of(AggSpec("time_since_first", time_unit=unit), events, 65000) == since_first


def test_time_since_grows_between_reads_and_is_clamped_at_zero() -> None:
    spec = AggSpec("time_since_last", time_unit="d")
    state = feed(spec, [(None, 86_400_000)])
    assert read(spec, state, 0) == 0.0
    assert read(spec, state, 86_400_000 * 2) == 1.0
    assert read(spec, state, 86_400_000 * 3) == 2.0


def test_ttl_expires_reads_to_none_and_any_update_resets_the_timer() -> None:
    spec = AggSpec("counter", ttl_ms=1000, default_value=0)
    state = feed(spec, [(None, 0), (None, 500)])
    assert read(spec, state, 1500) == 2
    assert read(spec, state, 1501) is None  # expired: None, not the default
    state = apply(spec, state, None, 1400)  # within ttl of 500: refreshes the timer
    assert read(spec, state, 2400) == 3


def test_ttl_expired_value_restarts_on_next_event() -> None:
    spec = AggSpec("sum", ttl_ms=1000)
    assert value_of(spec, [(5, 0), (7, 1000)], now=1000) == 12  # exactly ttl: still alive
    state = feed(spec, [(5, 0), (7, 2001)])
    assert read(spec, state, 2001) == 7
    state = apply(spec, state, 1, 10)  # a late event does not reset nor re-expire
    assert read(spec, state, 2500) == 8


def test_ignored_value_does_not_refresh_ttl() -> None:
    spec = AggSpec("max", ttl_ms=1000)
    state = feed(spec, [(3, 0), ("not a number", 900)])
    assert read(spec, state, 1001) is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (dict(kind="median"), "unknown aggregation"),
        (dict(kind="time_since_last"), "needs time_unit"),
        (dict(kind="time_since_last", time_unit="week"), "needs time_unit"),
        (dict(kind="counter", time_unit="s"), "only valid"),
        (dict(kind="counter", period_ms=1000, ttl_ms=1000), "lifetime"),
        (dict(kind="counter", period_ms=0), "positive"),
        (dict(kind="counter", ttl_ms=-5), "positive"),
        (dict(kind="counter", period_ms=1.5), "positive"),
    ],
)
def test_invalid_specs_are_refused(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AggSpec(**spec)


def test_lifetime_states_round_trip_through_orjson() -> None:
    events = at_times(["a", 1, 2.5, True, "a", "\x1fodd", None, -3])
    for kind in ("counter", "sum", "mean", "first", "unique_list", "category_count",
                 "approx_count_distinct", "most_frequent"):  # fmt: skip
        spec = AggSpec(kind)
        state = feed(spec, events)
        loaded = orjson.loads(orjson.dumps(state))
        assert loaded == state
        assert read(spec, loaded, 10**6) == read(spec, state, 10**6)


def test_specs_compare_by_definition_and_hash_with_list_defaults() -> None:
    spec = AggSpec("unique_list", period_ms=60_000, default_value=[])
    assert spec == AggSpec("unique_list", period_ms=60_000, default_value=[])
    assert spec != AggSpec("unique_list", period_ms=60_000)
    assert {spec: 1}[AggSpec("unique_list", period_ms=60_000, default_value=[])] == 1
