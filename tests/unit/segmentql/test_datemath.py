"""Calendar month arithmetic against datetime (Go ``AddDate`` overflow rules)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from processor.segmentql.datemath import MAX_MS, MIN_MS, add_months, from_datetime, to_datetime

DAY = 86_400_000


def add_months_by_datetime(ms: int, months: int) -> int | None:
    """The straightforward datetime version of ``AddDate(0, months, 0)``."""
    dt = to_datetime(ms)
    if dt is None:
        return None
    year, month = divmod(dt.year * 12 + (dt.month - 1) + months, 12)
    if not 1 <= year <= 9999:
        return None
    first = dt.replace(year=year, month=month + 1, day=1)
    try:
        return from_datetime(first + timedelta(days=dt.day - 1))
    except OverflowError:
        return None


def test_month_ends_overflow_like_go() -> None:
    jan31 = from_datetime(datetime(2026, 1, 31, 12, tzinfo=UTC))
    assert add_months(jan31, 1) == from_datetime(datetime(2026, 3, 3, 12, tzinfo=UTC))
    assert add_months(jan31, -13) == from_datetime(datetime(2024, 12, 31, 12, tzinfo=UTC))
    assert add_months(MAX_MS, 1) is None
    assert add_months(MIN_MS, -1) is None
    assert add_months(MAX_MS + 1, 0) is None


@settings(max_examples=2000, deadline=None)
@given(
    ms=st.integers(MIN_MS - DAY, MAX_MS + DAY)
    | st.integers(-(10**13), 10**13)
    | st.sampled_from([MIN_MS, MAX_MS, 0, -1, 951_782_400_000, 253_400_000_000_000]),
    months=st.integers(-12_000 * 12, 12_000 * 12) | st.integers(-40, 40),
)
def test_add_months_matches_datetime(ms: int, months: int) -> None:
    assert add_months(ms, months) == add_months_by_datetime(ms, months)
