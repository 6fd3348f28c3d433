"""Time buckets for rolling-window (``period``) attributes.

A windowed state is a list of bucket entries ``[bucket_index, *partial]`` sorted by
``bucket_index`` ascending, where ``bucket_index = ts_ms // width`` (floor division, so
negative times are bucketed consistently too) and ``partial`` is the aggregation's
partial aggregate of the events in that bucket.

**Bucket width.** ``bucket_width_ms(period)``: aim for 60 buckets per period, in whole
seconds (``c = max(1000, period // 60 rounded down to 1000 ms)``), then use
``gcd(period, c)`` when it gives at most 240 buckets so that the period is a whole number
of buckets (``PT10M`` → 10 s, ``PT1H`` → 60 s, ``P7D`` → 2.8 h, ``PT1.5S`` → 500 ms);
otherwise ``c``.

**The window rule (the only one; reference models must use it too).** A read at
``now_ms`` covers the buckets ``b`` with ``lo < b <= hi``, where ``lo = (now - period) //
width`` and ``hi = now // width``. In time, that is the bucket-aligned interval
``[(lo + 1) * width, (hi + 1) * width)``: the exact window ``(now - period, now]`` with
both ends rounded **up** to the bucket grid. Consequences, at most one bucket width:

- trailing edge: an event leaves the window up to ``width`` ms *early* — when its whole
  bucket leaves — and never late (no event older than ``period`` is ever counted);
- leading edge: an event timestamped after ``now`` but in now's bucket is counted.

When ``period`` is a multiple of ``width`` the window is exactly ``period / width``
buckets long.

**Bounded state, late events.** Applying an event to bucket ``b`` newer than every
stored bucket drops the buckets ``<= b - span`` (``span = ceil(period / width)``). An
event whose bucket is ``<= newest - span`` is ignored. Neither changes any read at a
time ``now_ms >= newest * width`` (reads not earlier than the newest event's bucket),
which is the only kind of read the contract promises to be exact.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from operator import itemgetter
from typing import Any

TARGET_BUCKETS = 60
MAX_ALIGNED_BUCKETS = 240

Entry = list[Any]
_bucket_of = itemgetter(0)


def bucket_width_ms(period_ms: int) -> int:
    """Bucket width for a rolling window of ``period_ms`` (see module docstring)."""
    if period_ms <= 0:
        raise ValueError(f"period must be positive, got {period_ms} ms")
    candidate = max(1000, period_ms // TARGET_BUCKETS // 1000 * 1000)
    aligned = math.gcd(period_ms, candidate)
    return aligned if period_ms // aligned <= MAX_ALIGNED_BUCKETS else candidate


def span_buckets(period_ms: int, width_ms: int) -> int:
    """How many buckets a window of ``period_ms`` may touch, rounded up."""
    return -(-period_ms // width_ms)


def window_bounds(period_ms: int, width_ms: int, now_ms: int) -> tuple[int, int]:
    """``(lo, hi)``: a read at ``now_ms`` covers buckets ``lo < b <= hi``."""
    return (now_ms - period_ms) // width_ms, now_ms // width_ms


def in_window(ts_ms: int, period_ms: int, width_ms: int, now_ms: int) -> bool:
    """Whether an event at ``ts_ms`` counts in a read at ``now_ms`` (the bucket rule)."""
    lo, hi = window_bounds(period_ms, width_ms, now_ms)
    return lo < ts_ms // width_ms <= hi


def entries_in_window(state: list[Entry], lo: int, hi: int) -> list[Entry]:
    """The bucket entries of ``state`` with ``lo < bucket <= hi``, oldest first."""
    return [entry for entry in state if lo < entry[0] <= hi]


def bucket_entry(
    state: list[Entry], bucket: int, span: int, new_entry: Callable[[int], Entry]
) -> Entry | None:
    """The entry for ``bucket`` in ``state``, created if missing; None if too old.

    Called on the slow path only (the caller handles "same bucket as the newest entry").
    Creating a newer bucket prunes the buckets that no valid read can see any more.
    """
    if not state or bucket > state[-1][0]:
        entry = new_entry(bucket)
        state.append(entry)
        cutoff = bucket - span
        if state[0][0] <= cutoff:
            del state[: bisect_right(state, cutoff, key=_bucket_of)]
        return entry
    if bucket <= state[-1][0] - span:
        return None
    i = bisect_left(state, bucket, key=_bucket_of)
    if state[i][0] == bucket:
        return state[i]
    entry = new_entry(bucket)
    state.insert(i, entry)
    return entry


def is_bucket_expired(bucket: int, period_ms: int, width_ms: int, now_ms: int) -> bool:
    """Whether ``bucket`` is already behind the trailing edge of the window at ``now_ms``."""
    return bucket <= (now_ms - period_ms) // width_ms
