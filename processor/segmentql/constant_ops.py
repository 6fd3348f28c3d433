"""Binary operators with a constant right operand, prepared once at compile time.

``x >= 5``, ``browser = "Chrome"``, ``country IN ("de", "fr")``, ``email LIKE "*@x.com"``:
the right side is a literal, so its coercions (number? date? date math?), the IN set and the
LIKE regex are worked out when the segment is compiled. Each test takes the left value (never
MISSING or NOT_OK, as for :mod:`operators`) and the clock, and returns exactly what the generic
operator would. Fast paths only accept left values of an exact type whose generic result they
can state (``type(x) is int`` leaves bools and odd subclasses to the generic code); everything
else is handed to :mod:`operators` unchanged.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

from . import operators
from .datemath import DateMath, parse_date, parse_datemath
from .pattern import compile_glob
from .values import NOT_OK, to_ms, to_number

#: ``test(left, now_ms)`` for a fixed operator and right operand.
ConstantTest = Callable[[Any, int], Any]
#: ``apply(left, right, now_ms)`` for a fixed operator (both operands present).
BinaryApply = Callable[[Any, Any, int], Any]

_ORDER = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def is_finite_number(value: Any) -> bool:
    """An exact int, or an exact float that is finite (what ``to_number`` keeps as is)."""
    kind = type(value)
    return kind is int or (kind is float and math.isfinite(value))


def _is_plain_string(value: Any) -> bool:
    """A string that is neither date math nor a date: it only ever equals itself."""
    return isinstance(value, str) and parse_datemath(value) is None and parse_date(value) is None


def generic_apply(op: str) -> BinaryApply:
    """The evaluator's dispatch from operator to :mod:`operators`, chosen once."""
    if op in ("=", "=="):
        return operators.equal
    if op == "!=":
        return _not_equal
    if op in _ORDER:
        return lambda left, right, now: operators.ordered(op, left, right, now)
    if op == "in":
        return lambda left, right, now: operators.member_of(left, _items(right), now)
    if op == "intersects":
        return lambda left, right, now: operators.intersects(left, _items(right), now)
    if op == "contains":
        return lambda left, right, _now: operators.contains(left, right)
    if op == "like":
        return lambda left, right, _now: operators.like(left, right)
    return lambda left, right, _now: operators.arithmetic(op, left, right)


def _items(right: Any) -> list[Any]:
    return right if isinstance(right, list) else [right]


def _not_equal(left: Any, right: Any, now: int) -> Any:
    result = operators.equal(left, right, now)
    return result if result is NOT_OK else not result


def constant_test(op: str, constant: Any) -> ConstantTest:
    """``left op constant`` where ``constant`` is a literal's value (not None, not a list)."""
    if op in ("=", "=="):
        return _equal_test(constant)
    if op == "!=":
        equal = _equal_test(constant)

        def not_equal(left: Any, now: int) -> Any:
            result = equal(left, now)
            return result if result is NOT_OK else not result

        return not_equal
    if op in _ORDER:
        return _ordered_test(op, constant)
    if op in ("in", "intersects"):
        return membership_test(op, [constant])
    if op == "contains" and isinstance(constant, str):
        return _contains_test(constant)
    if op == "like" and isinstance(constant, str):
        return _like_test(constant)
    apply = generic_apply(op)
    return lambda left, now: apply(left, constant, now)


def _equal_test(constant: Any) -> ConstantTest:
    generic = operators.equal
    if is_finite_number(constant):
        def equal_number(left: Any, now: int) -> Any:
            kind = type(left)
            if kind is int or kind is float:
                return left == constant  # NaN/inf never equal a finite number either way
            return generic(left, constant, now)

        return equal_number
    if _is_plain_string(constant):
        def equal_string(left: Any, now: int) -> Any:
            if type(left) is str:
                if left == constant:
                    return True
                if not left.startswith("now"):
                    return False  # neither is date math or a date: plain string inequality
            return generic(left, constant, now)

        return equal_string
    return lambda left, now: generic(left, constant, now)


def _ordered_test(op: str, constant: Any) -> ConstantTest:
    compare = _ORDER[op]

    def generic(left: Any, now: int) -> Any:
        return operators.ordered(op, left, constant, now)

    if is_finite_number(constant):
        def ordered_number(left: Any, now: int) -> Any:
            kind = type(left)
            if kind is int or (kind is float and math.isfinite(left)):
                return compare(left, constant)
            return generic(left, now)

        return ordered_number
    datemath = parse_datemath(constant) if isinstance(constant, str) else None
    if datemath is not None:
        return _ordered_datemath_test(compare, datemath, generic)
    return generic


def _ordered_datemath_test(
    compare: Callable[[int, int], bool], datemath: DateMath, generic: ConstantTest
) -> ConstantTest:
    """``left OP "now-30d"``: date math forces a time comparison in whole seconds."""

    def ordered_datemath(left: Any, now: int) -> Any:
        if isinstance(left, bool | list | tuple):
            return generic(left, now)
        left_ms, right_ms = to_ms(left, now), datemath.apply(now)
        if left_ms is None or right_ms is None:
            return NOT_OK
        return compare(left_ms // 1000, right_ms // 1000)

    return ordered_datemath


def membership_test(op: str, items: list[Any]) -> ConstantTest:
    """``left IN (...)`` / ``left INTERSECTS (...)`` over constant items (Nones dropped)."""
    generic = operators.member_of if op == "in" else operators.intersects
    if items and all(_is_plain_string(item) for item in items):
        strings = frozenset(items)

        def in_strings(left: Any, now: int) -> Any:
            kind = type(left)
            if kind is str:
                return left in strings
            if kind is list and all(type(element) is str for element in left):
                return not strings.isdisjoint(left)
            return generic(left, items, now)

        return in_strings
    if items and all(is_finite_number(item) for item in items):
        numbers = frozenset(items)

        def in_numbers(left: Any, now: int) -> Any:
            kind = type(left)
            if kind is int or kind is float:
                return left in numbers  # NaN/inf are in no set of finite numbers
            return generic(left, items, now)

        return in_numbers
    return lambda left, now: generic(left, items, now)


def _contains_test(constant: str) -> ConstantTest:
    def contains(left: Any, _now: int) -> Any:
        if type(left) is str:
            return constant in left
        return operators.contains(left, constant)

    return contains


def _like_test(pattern: str) -> ConstantTest:
    match = compile_glob(pattern).fullmatch

    def like(left: Any, _now: int) -> Any:
        if type(left) is str:
            return match(left) is not None
        return operators.like(left, pattern)

    return like


def between_test(low: Any, high: Any) -> ConstantTest | None:
    """``value BETWEEN low AND high`` for two numeric or two date-math bounds, else None."""
    if is_finite_number(low) and is_finite_number(high):
        return _between_numbers(low, high)
    low_dm = parse_datemath(low) if isinstance(low, str) else None
    high_dm = parse_datemath(high) if isinstance(high, str) else None
    if low_dm is not None and high_dm is not None:
        return _between_datemath(low_dm, high_dm)
    return None


def _between_numbers(low: Any, high: Any) -> ConstantTest:
    def between_numbers(value: Any, now: int) -> Any:
        kind = type(value)
        if kind is int or (kind is float and math.isfinite(value)):
            return low < value < high
        return operators.between(value, low, high, now)

    return between_numbers


def _between_datemath(low: DateMath, high: DateMath) -> ConstantTest:
    """``x BETWEEN "now-90d" AND "now-7d"``: both ends force time comparisons in seconds."""

    def between_datemath(value: Any, now: int) -> Any:
        if isinstance(value, bool):
            return NOT_OK
        if isinstance(value, str) and (to_number(value) is not None or parse_date(value) is None):
            return NOT_OK  # numeric strings and non-dates are not-ok, as in operators.between
        value_ms, low_ms, high_ms = to_ms(value, now), low.apply(now), high.apply(now)
        if value_ms is None or low_ms is None or high_ms is None:
            return NOT_OK
        return low_ms // 1000 < value_ms // 1000 < high_ms // 1000

    return between_datemath
