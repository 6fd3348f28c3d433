"""Time boundaries (spec §5.2, scenarios S5/S6): when truth may change with no new data."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from processor.segmentql import evaluate, next_boundary, parse, uses_time
from processor.segmentql.boundaries import (
    Clock,
    bisect_flip,
    calendar_flip,
    first_flip,
    linear_flip,
)
from processor.segmentql.datemath import MAX_MS, MIN_MS, DateMath

T0 = 1_767_312_000_000  # 2026-01-02T00:00:00Z
DAY = 86_400_000


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def boundary(text: str, profile: dict[str, Any], now_ms: int = T0) -> int | None:
    return next_boundary(parse(text), profile, now_ms=now_ms)


def test_s5_exit_thirty_days_after_last_activity() -> None:
    stmt = parse('FILTER last_active_ts > "now-30d"')
    profile = {"last_active_ts": "2026-01-01T00:00:00Z"}
    bt = next_boundary(stmt, profile, now_ms=T0)
    assert bt == ms("2026-01-31T00:00:00")  # = Ct + 30d = T0 + 29d
    assert evaluate(stmt, profile, now_ms=bt - 1)
    assert not evaluate(stmt, profile, now_ms=bt)
    assert next_boundary(stmt, profile, now_ms=bt) is None  # once out, time cannot bring it back
    moved = {"last_active_ts": T0 + 10 * DAY}
    assert next_boundary(stmt, moved, now_ms=T0 + 10 * DAY) == ms("2026-02-11T00:00:00")


def test_boundary_is_field_value_plus_offset() -> None:
    t = T0 - 5 * DAY
    assert boundary('FILTER last_visit > "now-30d"', {"last_visit": t}) == t + 30 * DAY
    # >= stays true through the whole second in which the values are equal
    assert boundary('FILTER last_visit >= "now-30d"', {"last_visit": t}) == t + 30 * DAY + 1000


def test_s6_enter_as_future_date_approaches() -> None:
    stmt = parse('FILTER renewal_date < "now+7d"')
    profile = {"renewal_date": "2026-01-20T00:00:00Z"}
    assert not evaluate(stmt, profile, now_ms=T0)
    bt = next_boundary(stmt, profile, now_ms=T0)
    assert bt == ms("2026-01-13T00:00:01")  # strict <: equal second is still false (§5.2 edge)
    assert not evaluate(stmt, profile, now_ms=bt - 1)
    assert evaluate(stmt, profile, now_ms=bt)
    assert next_boundary(stmt, profile, now_ms=bt) is None


def test_s6_between_window_enters_then_exits() -> None:
    stmt = parse('FILTER renewal_date BETWEEN "now-1d" AND "now+7d"')
    profile = {"renewal_date": "2026-01-20T00:00:00Z"}
    enter = next_boundary(stmt, profile, now_ms=T0)
    assert enter is not None and abs(enter - ms("2026-01-13T00:00:00")) <= 1000
    assert evaluate(stmt, profile, now_ms=enter)
    leave = next_boundary(stmt, profile, now_ms=enter)
    assert leave == ms("2026-01-21T00:00:00")
    assert not evaluate(stmt, profile, now_ms=leave)
    assert evaluate(stmt, profile, now_ms=leave - 1)


def test_literal_on_the_left_is_flipped() -> None:
    t = T0 - DAY
    assert boundary('FILTER "now-7d" < seen', {"seen": t}) == boundary(
        'FILTER seen > "now-7d"', {"seen": t}
    )


def test_no_time_dependence_means_no_boundary() -> None:
    assert boundary('FILTER plan = "pro"', {"plan": "pro"}) is None
    assert not uses_time(parse('FILTER plan = "pro"'))
    assert uses_time(parse('FILTER x > "now-1d"'))
    assert uses_time(parse("FILTER x < now()"))


def test_missing_or_unparseable_field_has_no_boundary() -> None:
    assert boundary('FILTER seen > "now-7d"', {}) is None
    assert boundary('FILTER seen > "now-7d"', {"seen": "not a date"}) is None


def test_earliest_boundary_across_terms_and_logic() -> None:
    text = 'FILTER OR ( a > "now-10d", NOT b < "now+2d", AND ( c > "now-1h" ) )'
    profile = {"a": T0, "b": T0 + 5 * DAY, "c": T0}
    assert boundary(text, profile) == T0 + 3_600_000
    assert boundary(text, {"a": T0, "b": T0 + 5 * DAY}) == T0 + 3 * DAY + 1000


def test_list_of_times_uses_each_element() -> None:
    profile = {"visits": [T0 - 2 * DAY, T0 - 6 * DAY]}
    assert boundary('FILTER visits > "now-7d"', profile) == T0 + DAY


def test_month_math_uses_calendar_arithmetic() -> None:
    profile = {"t": ms("2025-12-15T00:00:00")}
    bt = boundary('FILTER t > "now-1M"', profile)
    assert bt == ms("2026-01-15T00:00:00")
    stmt = parse('FILTER t > "now-1M"')
    assert evaluate(stmt, profile, now_ms=bt - 1) and not evaluate(stmt, profile, now_ms=bt)


def test_include_boundaries_are_merged() -> None:
    stmt = parse('FILTER AND ( INCLUDE recent, x > "now-1d" )')
    got = next_boundary(stmt, {"x": T0}, now_ms=T0, include_boundary=lambda _: T0 + 5)
    assert got == T0 + 5


def test_absurd_values_do_not_crash() -> None:
    assert boundary('FILTER t > "now-999y"', {"t": 10**30}) is None
    assert boundary('FILTER t < "now+999y"', {"t": -(10**30)}) is None
    assert boundary('FILTER t > "now-1d"', {"t": float("inf")}) is None


@settings(max_examples=200, deadline=None)
@given(
    op=st.sampled_from([">", ">=", "<", "<=", "=", "!="]),
    amount=st.integers(0, 400),
    unit=st.sampled_from(["s", "m", "h", "d", "w", "M", "y"]),
    sign=st.sampled_from(["+", "-"]),
    offset=st.integers(-(400 * DAY), 400 * DAY),
)
def test_boundary_is_exactly_where_truth_flips(
    op: str, amount: int, unit: str, sign: str, offset: int
) -> None:
    """Property: nothing changes before the boundary, and the truth differs at it."""
    stmt = parse(f'FILTER t {op} "now{sign}{amount}{unit}"')
    profile = {"t": T0 + offset}
    before = evaluate(stmt, profile, now_ms=T0)
    bt = next_boundary(stmt, profile, now_ms=T0)
    if bt is None:
        if unit not in "My":  # calendar math is only approximately monotone
            assert evaluate(stmt, profile, now_ms=T0 + 500 * 366 * DAY) == before
        return
    assert bt > T0
    if unit not in "My":
        assert evaluate(stmt, profile, now_ms=bt) != before
        assert evaluate(stmt, profile, now_ms=bt - 1) == before


@settings(max_examples=2000, deadline=None)
@given(
    op=st.sampled_from([">", ">=", "<", "<="]),
    ct=st.integers(-(10**15), 10**15) | st.sampled_from([0, 999, 1000, -1, -1000, MAX_MS, MIN_MS]),
    offset=st.integers(-(1000 * 366 * DAY), 1000 * 366 * DAY) | st.sampled_from([0, 1000, -1]),
    now=st.integers(-(10**13), 10**14) | st.integers(MAX_MS - 10**10, MAX_MS + 10),
)
def test_direct_flip_equals_bisection(op: str, ct: int, offset: int, now: int) -> None:
    """The solved flip for fixed-unit date math is the instant the bisection would find."""

    def rel(t: int) -> int:  # Clock.at for any offset, not only whole units
        result = t + offset
        if MIN_MS <= result <= MAX_MS:
            return result
        return MAX_MS if offset > 0 or t > 0 else -MAX_MS

    assume(now + offset >= MIN_MS)
    assert linear_flip(op, ct, offset, now) == bisect_flip(op, ct, rel, now)


@settings(max_examples=500, deadline=None)
@given(
    op=st.sampled_from([">", ">=", "<", "<="]),
    amount=st.integers(-5000, 5000),
    unit=st.sampled_from(["s", "m", "h", "d", "w"]),
    ct=st.integers(-(10**14), 10**14),
    now=st.integers(-(10**13), 10**14),
)
def test_first_flip_matches_bisection_over_date_math(
    op: str, amount: int, unit: str, ct: int, now: int
) -> None:
    datemath = DateMath(amount, unit)
    clock = Clock(datemath, datemath.fixed_ms)
    assert first_flip(op, ct, clock, now) == bisect_flip(op, ct, clock.at, now)


@settings(max_examples=2000, deadline=None)
@given(
    op=st.sampled_from([">", ">=", "<", "<="]),
    amount=st.integers(-30, 30) | st.integers(-1000, 1000),
    unit=st.sampled_from(["M", "y"]),
    ct=st.integers(-(10**14), 10**14) | st.integers(MAX_MS - 10**11, MAX_MS),
    now=st.integers(-(10**13), 10**14) | st.integers(MIN_MS, MIN_MS + 10**11)
    | st.integers(MAX_MS - 10**11, MAX_MS + 10),
)
def test_calendar_flip_matches_bisection(op: str, amount: int, unit: str, ct: int, now: int) -> None:
    """Month/year date math is not monotone at month ends; the result is still the bisection's."""
    datemath = DateMath(amount, unit)
    clock = Clock(datemath, datemath.fixed_ms)
    assert calendar_flip(op, ct, datemath, now) == bisect_flip(op, ct, clock.at, now)
