"""Binary and ternary operator semantics on evaluated values (spec §1.4).

Each function takes values that are neither MISSING nor NOT_OK (the evaluator handles those
first, because their meaning depends on the operator) and returns a bool, a number, or
NOT_OK when the operand types do not support the operation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .datemath import parse_date
from .pattern import glob_match
from .values import (
    MISSING,
    NOT_OK,
    Instant,
    is_number,
    is_time_like_literal,
    parse_bool,
    to_ms,
    to_number,
)


def _seconds(ms: int) -> int:
    # Time comparisons truncate to whole seconds (spec §1.7 quirk 8).
    return ms // 1000


def compare_times(left: Any, right: Any, now_ms: int) -> int | None:
    """-1/0/1 comparing two time-like values at second resolution, None if either isn't."""
    lt, rt = to_ms(left, now_ms), to_ms(right, now_ms)
    if lt is None or rt is None:
        return None
    ls, rs = _seconds(lt), _seconds(rt)
    return (ls > rs) - (ls < rs)


def _is_date_string(value: Any) -> bool:
    return isinstance(value, str) and parse_date(value) is not None


def order(left: Any, right: Any, now_ms: int) -> int | None:
    """-1/0/1 for ``left`` vs ``right`` by numbers or by time; None when incomparable.

    Date math or an Instant on either side forces a time comparison; otherwise two numbers
    (numeric strings coerce) compare numerically; otherwise date strings/epoch numbers compare
    as times. Strings never order lexically (Lytics does not support it).
    """
    if isinstance(left, bool) or isinstance(right, bool):
        return None
    if is_time_like_literal(left) or is_time_like_literal(right):
        return compare_times(left, right, now_ms)
    ln, rn = to_number(left), to_number(right)
    if ln is not None and rn is not None:
        return (ln > rn) - (ln < rn)
    if _is_date_string(left) or _is_date_string(right):
        return compare_times(left, right, now_ms)
    return None


def ordered(op: str, left: Any, right: Any, now_ms: int) -> Any:
    """``>``, ``>=``, ``<``, ``<=``; a list on the left matches if any element does."""
    if isinstance(left, list | tuple):
        results = [ordered(op, item, right, now_ms) for item in left]
        if any(r is True for r in results):
            return True
        return False if any(r is False for r in results) else NOT_OK
    cmp = order(left, right, now_ms)
    if cmp is None:
        return NOT_OK
    return {">": cmp > 0, ">=": cmp >= 0, "<": cmp < 0, "<=": cmp <= 0}[op]


def equal(left: Any, right: Any, now_ms: int) -> Any:
    """``=`` / ``==``: True, False, or NOT_OK when the types cannot be compared."""
    if isinstance(left, list | tuple):
        results = [equal(item, right, now_ms) for item in left]
        if any(r is True for r in results):
            return True
        return False if any(r is False for r in results) or not results else NOT_OK
    if isinstance(left, bool) or isinstance(right, bool):
        return _equal_bool(left, right)
    if isinstance(left, Mapping) or isinstance(right, Mapping | list | tuple):
        return NOT_OK
    if is_time_like_literal(left) or is_time_like_literal(right):
        cmp = compare_times(left, right, now_ms)
        return NOT_OK if cmp is None else cmp == 0
    if isinstance(left, str) and isinstance(right, str):
        if left == right:
            return True
        if _is_date_string(left) and _is_date_string(right):
            return compare_times(left, right, now_ms) == 0
        return False
    return _equal_mixed(left, right, now_ms)


def _equal_bool(left: Any, right: Any) -> Any:
    if isinstance(left, bool) and isinstance(right, bool):
        return left == right
    if isinstance(left, bool):
        # A JSON boolean in the profile never equals a string such as "t" (quirk 9).
        return NOT_OK
    if isinstance(left, str):
        parsed = parse_bool(left)
        return NOT_OK if parsed is None else parsed == right
    return NOT_OK


def _equal_mixed(left: Any, right: Any, now_ms: int) -> Any:
    if is_number(left) or is_number(right):
        ln, rn = to_number(left), to_number(right)
        if ln is not None and rn is not None:
            return ln == rn
        cmp = compare_times(left, right, now_ms) if (
            _is_date_string(left) or _is_date_string(right)) else None
        return False if cmp is None else cmp == 0
    return left == right


def member_of(left: Any, items: list[Any], now_ms: int) -> Any:
    """``IN``: scalar equals any item; list intersects; map has any item as a key."""
    if isinstance(left, list | tuple):
        return intersects(left, items, now_ms)
    if isinstance(left, Mapping):
        return any(isinstance(item, str) and item in left for item in items)
    return any(equal(left, item, now_ms) is True for item in items)


def intersects(left: Any, items: list[Any], now_ms: int) -> Any:
    """``INTERSECTS``: some element (or map key) of ``left`` equals some item."""
    if isinstance(left, Mapping):
        elements: list[Any] = list(left.keys())
    elif isinstance(left, list | tuple):
        elements = list(left)
    else:
        elements = [left]
    return any(
        equal(element, item, now_ms) is True for element in elements for item in items
    )


def contains(left: Any, right: Any) -> Any:
    """``CONTAINS``: substring; on a list, any element contains it (ints: element equality)."""
    if isinstance(left, list | tuple):
        if is_number(right):
            return any(is_number(e) and e == right for e in left)
        if isinstance(right, str):
            return any(isinstance(e, str) and right in e for e in left)
        return NOT_OK
    if isinstance(left, str) and isinstance(right, str):
        return right in left
    if isinstance(left, str) and is_number(right):
        return str(right) in left
    return NOT_OK


def like(left: Any, right: Any) -> Any:
    """``LIKE``: glob match (see ``pattern.py``); on a list, any element matches."""
    if not isinstance(right, str):
        return NOT_OK
    if isinstance(left, list | tuple):
        return any(isinstance(e, str) and glob_match(right, e) for e in left)
    if isinstance(left, str):
        return glob_match(right, left)
    return NOT_OK


def between(value: Any, low: Any, high: Any, now_ms: int) -> Any:
    """Exclusive ``low < value < high`` over numbers or times.

    A string-typed numeric value (``"15"``) is not-ok, as in Lytics; a date string is taken as
    a time when the bounds are times, since profiles here carry ISO timestamps as strings.
    """
    if isinstance(value, bool) or value is MISSING:
        return NOT_OK
    if isinstance(value, str) and to_number(value) is not None:
        return NOT_OK
    if isinstance(value, str) and not _is_date_string(value):
        return NOT_OK
    c_low, c_high = order(value, low, now_ms), order(value, high, now_ms)
    if c_low is None or c_high is None:
        return NOT_OK
    return c_low > 0 and c_high < 0


def arithmetic(op: str, left: Any, right: Any) -> Any:
    """``+ - * / %`` on numbers (numeric strings coerce); ints stay ints (Go semantics)."""
    ln, rn = to_number(left), to_number(right)
    if ln is None or rn is None or isinstance(left, bool) or isinstance(right, bool):
        return NOT_OK
    if op == "+":
        return ln + rn
    if op == "-":
        return ln - rn
    if op == "*":
        return ln * rn
    if rn == 0:
        return NOT_OK
    if isinstance(ln, int) and isinstance(rn, int):
        quotient = abs(ln) // abs(rn) * (1 if (ln >= 0) == (rn >= 0) else -1)
        return quotient if op == "/" else ln - quotient * rn
    if op == "/":
        return ln / rn
    return math.fmod(ln, rn)


def instant_of(value: Any, now_ms: int) -> Instant | None:
    ms = to_ms(value, now_ms)
    return None if ms is None else Instant(ms)
