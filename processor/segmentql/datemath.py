"""Date math (``"now-7d"``) and lenient date parsing, on epoch milliseconds in UTC.

Grammar (spec §1.3): ``now`` ``+``/``-`` digits unit, unit one of ``y M w d h m s`` — case
matters, ``M`` is month and ``m`` minute. Years and months use calendar arithmetic with Go's
``AddDate`` overflow normalisation (Jan 31 + 1 month = Mar 3), as Lytics does; the other units
are fixed durations (UTC days have no DST). Offsets are bounded so that absurd literals such as
``"now-99999y"`` are refused when the segment is parsed instead of overflowing later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

_DATEMATH = re.compile(r"now([+-])(\d{1,12})([yMwdhms])")
_UNIT_MS = {"w": 604_800_000, "d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1_000}
#: Largest accepted offset, in approximate milliseconds (1000 years).
MAX_OFFSET_MS = 1000 * 366 * 86_400_000
_APPROX_UNIT_MS = {"y": 366 * 86_400_000, "M": 31 * 86_400_000, **_UNIT_MS}
#: The representable range of instants (years 1..9999), as datetime allows.
MIN_MS = -62_135_596_800_000
MAX_MS = 253_402_300_799_999
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class DateMath:
    """A parsed ``now±N<unit>`` offset; ``amount`` is signed."""

    amount: int
    unit: str

    def apply(self, anchor_ms: int) -> int | None:
        """The instant ``anchor ± offset`` in epoch ms, or None if outside years 1..9999."""
        if self.unit in _UNIT_MS:
            result = anchor_ms + self.amount * _UNIT_MS[self.unit]
        else:
            months = self.amount * (12 if self.unit == "y" else 1)
            result_or_none = add_months(anchor_ms, months)
            if result_or_none is None:
                return None
            result = result_or_none
        return result if MIN_MS <= result <= MAX_MS else None


def parse_datemath(text: str) -> DateMath | None:
    """The offset of a date-math literal, or None when ``text`` is not date math."""
    m = _DATEMATH.fullmatch(text)
    if m is None:
        return None
    amount = int(m.group(2)) * (1 if m.group(1) == "+" else -1)
    return DateMath(amount, m.group(3))


def datemath_problem(text: str) -> str | None:
    """Why ``text`` is unusable date math (offset too large), or None if fine / not date math."""
    dm = parse_datemath(text)
    if dm is None:
        return None
    if abs(dm.amount) * _APPROX_UNIT_MS[dm.unit] > MAX_OFFSET_MS:
        return f"date math {text!r} is out of range (at most 1000 years from now)"
    return None


def to_datetime(ms: int) -> datetime | None:
    if not MIN_MS <= ms <= MAX_MS:
        return None
    return _EPOCH + timedelta(milliseconds=ms)


def from_datetime(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def add_months(ms: int, months: int) -> int | None:
    """Go ``AddDate(0, months, 0)``: keep day-of-month and overflow into the next month."""
    dt = to_datetime(ms)
    if dt is None:
        return None
    total = dt.year * 12 + (dt.month - 1) + months
    year, month = divmod(total, 12)
    if not 1 <= year <= 9999:
        return None
    first = dt.replace(year=year, month=month + 1, day=1)
    try:
        return from_datetime(first + timedelta(days=dt.day - 1))
    except OverflowError:
        return None


_US_FORMATS = ("%m/%d/%Y", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%Y/%m/%d", "%Y/%m/%d %H:%M:%S")


@lru_cache(maxsize=8192)  # profiles repeat the same strings; strptime failures are costly
def parse_date(text: str) -> int | None:
    """Epoch ms of an absolute date string, or None.

    Accepts ISO-8601 (``2026-01-02``, ``2026-01-02T00:00:00Z``, offsets, fractions, a space for
    ``T``), US ``12/18/2015`` and ``2015/12/18`` forms, and all-digit epochs by length
    (9-10 digits seconds, 12-13 milliseconds) like araddon/dateparse. Naive times are UTC.
    """
    text = text.strip()
    if not text or len(text) > 64:
        return None
    if text.isdigit():
        return _parse_epoch_digits(text)
    if text[0].isdigit() and "-" in text[:5]:
        try:
            return from_datetime(datetime.fromisoformat(text.replace("z", "Z")))
        except ValueError:
            return None
    if not text[0].isdigit() or "/" not in text:
        return None  # every remaining format starts with digits and has a '/'
    for fmt in _US_FORMATS:
        try:
            return from_datetime(datetime.strptime(text, fmt))
        except ValueError:
            continue
    return None


def _parse_epoch_digits(text: str) -> int | None:
    if len(text) in (9, 10):
        return int(text) * 1000
    if len(text) in (12, 13):
        return int(text)
    return None
