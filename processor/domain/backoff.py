"""Retry timing, as pure functions: how long to wait, what a server asked for, what to retry.

The retry *loops* live in the sinks; they call these so the policy is testable without a clock.
"""

from __future__ import annotations

import math
import random
from datetime import UTC
from email.utils import parsedate_to_datetime

# Beyond this the doubling is far past any sane cap; stop before float overflow.
_MAX_EXPONENT = 62

# 408 timeout, 409 conflict (often a concurrent-update race), 425 too early, 429 slow down.
_RETRIABLE_4XX = frozenset({408, 409, 425, 429})


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait before retry number ``attempt`` (1 = the first retry).

    Exponential backoff with *full jitter*: uniform in ``[0, min(cap, base * 2**(attempt-1))]``.
    Full jitter spreads retries of many failing senders so they do not hit a recovering target
    in lock-step. ``rng`` is injected so tests (and replays) are deterministic.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    if base < 0 or cap < 0:
        raise ValueError("base and cap must be non-negative")
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, _MAX_EXPONENT))
    return rng.uniform(0.0, ceiling)


def retry_after_seconds(header_value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait, or ``None`` if absent or unreadable.

    Accepts delta-seconds (``"120"``; a decimal is tolerated) and an HTTP-date
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``), the latter relative to ``now`` (epoch seconds).
    A date in the past means "now" (0.0); negative deltas are unreadable.
    """
    if header_value is None:
        return None
    text = header_value.strip()
    if not text:
        return None
    if text[0].isdigit():
        try:
            seconds = float(text)
        except ValueError:
            return None
        return seconds if math.isfinite(seconds) else None
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # RFC 9110: an HTTP-date is GMT even when it does not say so
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - now)


def is_retriable_status(code: int) -> bool:
    """Whether an HTTP response status is worth retrying: 5xx, 408, 409, 425, 429.

    Other 4xx mean the request itself is wrong (bad URL, auth, payload) and will fail again;
    1xx-3xx are not failures a retry fixes (redirects are not followed, on purpose).
    """
    return 500 <= code <= 599 or code in _RETRIABLE_4XX
