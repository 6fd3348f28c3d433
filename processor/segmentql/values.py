"""Runtime values of the evaluator and the coercions between them (spec §1.4).

Evaluation yields a plain Python value (str, int, float, bool, list, dict), an
:class:`Instant`, or one of two sentinels: :data:`MISSING` (the field is absent or null — a
comparison on it has defined, "ok" results) and :data:`NOT_OK` (the expression cannot be
evaluated — type mismatch, unresolved include, divide by zero — and no match can come of it,
not even under NOT).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from .datemath import parse_date, parse_datemath, to_datetime


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


MISSING: Final = _Sentinel("MISSING")
NOT_OK: Final = _Sentinel("NOT_OK")


@dataclass(frozen=True, order=True)
class Instant:
    """A point in time, epoch milliseconds UTC (what ``now()`` and ``todate()`` return)."""

    ms: int


_TRUE_STRINGS = frozenset({"1", "t", "T", "true", "TRUE", "True"})
_FALSE_STRINGS = frozenset({"0", "f", "F", "false", "FALSE", "False"})


def parse_bool(text: str) -> bool | None:
    """Go ``strconv.ParseBool``: ``"t"``, ``"1"``, ``"true"`` … or None."""
    if text in _TRUE_STRINGS:
        return True
    if text in _FALSE_STRINGS:
        return False
    return None


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def to_number(value: Any) -> int | float | None:
    """A finite int/float from a number or numeric string (``"5"``, ``"1.5"``), else None."""
    if is_number(value):
        return value if not isinstance(value, float) or math.isfinite(value) else None
    if isinstance(value, str):
        text = value.strip()
        if not text or len(text) > 64:
            return None
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def to_ms(value: Any, now_ms: int) -> int | None:
    """Epoch ms of a time-like value: Instant, epoch-ms number, date-math or date string."""
    if isinstance(value, Instant):
        return value.ms
    if is_number(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return int(value)
    if isinstance(value, str):
        dm = parse_datemath(value)
        if dm is not None:
            return dm.apply(now_ms)
        return parse_date(value)
    return None


def is_time_like_literal(value: Any) -> bool:
    """True for values that force a time comparison: instants and date-math strings."""
    return isinstance(value, Instant) or (
        isinstance(value, str) and parse_datemath(value) is not None
    )


def truthy(value: Any) -> bool:
    """qlbridge "truthy": non-zero, non-empty, non-zero-time; missing/not-ok are false."""
    if value is MISSING or value is NOT_OK or value is None:
        return False
    if isinstance(value, Instant):
        return value.ms != 0
    if isinstance(value, str):
        parsed = parse_bool(value)
        return parsed if parsed is not None else value != ""
    if isinstance(value, bool | int | float):
        return bool(value)
    if isinstance(value, list | tuple | Mapping):
        return len(value) > 0
    return True


def to_text(value: Any) -> str | None:
    """String form for string functions; None for missing/not-ok/containers."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if is_number(value):
        if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
            return str(int(value))
        return str(value)
    if isinstance(value, Instant):
        dt = to_datetime(value.ms)
        return dt.isoformat().replace("+00:00", "Z") if dt else None
    return None


def lookup(profile: Mapping[str, Any], parts: tuple[str, ...]) -> Any:
    """A field's value or MISSING (null counts as missing).

    Each part is tried verbatim first (``"a.b"`` as a key), then split at its first ``.`` into
    map key and rest, recursively (spec §1.3 nested fields).
    """
    current: Any = profile
    for part in parts:
        current = _lookup_part(current, part)
        if current is MISSING:
            return MISSING
    return MISSING if current is None else current


def _lookup_part(container: Any, key: str) -> Any:
    if not isinstance(container, Mapping):
        return MISSING
    if key in container:
        return container[key]
    head, dot, rest = key.partition(".")
    if not dot or not head or not rest:
        return MISSING
    return _lookup_part(container.get(head), rest)
