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

    @property
    def fixed_ms(self) -> int | None:
        """The signed offset in ms for fixed units (``w d h m s``); None for months and years."""
        unit_ms = _UNIT_MS.get(self.unit)
        return None if unit_ms is None else self.amount * unit_ms

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
    """Go ``AddDate(0, months, 0)``: keep day-of-month and overflow into the next month.

    Integer calendar arithmetic (no datetime objects): boundary search calls this often.
    """
    if not MIN_MS <= ms <= MAX_MS:
        return None
    days, ms_of_day = divmod(ms, _DAY_MS)
    year, month, day = _civil_from_days(days)
    year, month0 = divmod(year * 12 + (month - 1) + months, 12)
    if not 1 <= year <= 9999:
        return None
    result = _days_from_civil(year, month0 + 1, 1) + day - 1  # Mar 3 for "Feb 31"
    return None if result > _LAST_DAY else result * _DAY_MS + ms_of_day


_DAY_MS = 86_400_000
_LAST_DAY = MAX_MS // _DAY_MS  # 9999-12-31, days since the epoch


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era, yoe = divmod(year, 400)
    doy = (153 * (month - 3 if month > 2 else month + 9) + 2) // 5 + day - 1
    return era * 146_097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719_468


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a day count since 1970-01-01; inverse of :func:`_days_from_civil`."""
    era, doe = divmod(days + 719_468, 146_097)
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


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
