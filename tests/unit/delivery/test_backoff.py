"""Retry timing: full-jitter backoff, Retry-After parsing, which statuses to retry."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.domain.backoff import backoff_delay, is_retriable_status, retry_after_seconds


@given(attempt=st.integers(1, 10_000), base=st.floats(0, 10), cap=st.floats(0, 600),
       seed=st.integers(0, 2**32))
def test_backoff_stays_within_full_jitter_bounds(attempt: int, base: float, cap: float,
                                                 seed: int) -> None:
    delay = backoff_delay(attempt, base=base, cap=cap, rng=random.Random(seed))
    assert 0.0 <= delay <= min(cap, base * 2.0 ** min(attempt - 1, 62))


def test_backoff_ceiling_doubles_then_caps() -> None:
    # The maximum over many draws approaches the ceiling: 0.5, 1, 2, 4, then the cap 5.
    rng = random.Random(7)
    highest = [max(backoff_delay(n, base=0.5, cap=5.0, rng=rng) for _ in range(2000))
               for n in range(1, 7)]
    for got, ceiling in zip(highest, [0.5, 1, 2, 4, 5, 5], strict=True):
        assert ceiling * 0.98 <= got <= ceiling


def test_backoff_is_jittered_and_deterministic_per_seed() -> None:
    draws = [backoff_delay(4, base=1, cap=60, rng=random.Random(1)) for _ in range(3)]
    assert draws[0] == draws[1] == draws[2]
    spread = {round(backoff_delay(4, base=1, cap=60, rng=random.Random(s)), 6) for s in range(50)}
    assert len(spread) > 40


def test_backoff_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError, match="attempt counts from 1"):
        backoff_delay(0, base=1, cap=1, rng=random.Random())


NOW = datetime(2026, 1, 2, 12, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("header", "expected"), [
    ("120", 120.0), (" 3 ", 3.0), ("0", 0.0), ("1.5", 1.5),
    ("Fri, 02 Jan 2026 12:00:30 GMT", 30.0),
    ("Friday, 02-Jan-26 12:01:00 GMT", 60.0),       # RFC 850 form
    ("Fri Jan  2 12:00:10 2026", 10.0),              # asctime form, GMT implied
    ("Fri, 02 Jan 2026 11:00:00 GMT", 0.0),          # in the past: retry now
    (None, None), ("", None), ("soon", None), ("-5", None), ("12abc", None), ("inf", None),
])
def test_retry_after(header: str | None, expected: float | None) -> None:
    assert retry_after_seconds(header, NOW) == expected


def test_retry_after_from_formatted_date() -> None:
    moment = datetime.fromtimestamp(NOW + 90, tz=UTC)
    assert retry_after_seconds(format_datetime(moment, usegmt=True), NOW) == 90.0


@pytest.mark.parametrize("code", [500, 502, 503, 504, 599, 408, 409, 425, 429])
def test_retriable_statuses(code: int) -> None:
    assert is_retriable_status(code)


@pytest.mark.parametrize("code", [200, 204, 301, 302, 400, 401, 403, 404, 405, 410, 413, 422])
def test_non_retriable_statuses(code: int) -> None:
    assert not is_retriable_status(code)
