"""When can a segment's truth change with no new data? (spec §5.2)

For every comparison between a profile value ``Ct`` and a clock-relative term ``rel(t)``
(date math ``"now-30d"``, ``now()``, ``todate("now-3d")``), the comparison's truth at time ``t``
is ``sec(Ct) OP sec(rel(t))`` (second resolution, as the evaluator compares). ``rel`` grows with
``t``, so ``>``/``>=`` can only go true→false and ``<``/``<=`` false→true; ``=``/``!=`` and
``BETWEEN`` are split into such one-sided parts. The flip instant is found by bisection on
that monotone truth, so it is exact to the millisecond and agrees with :func:`evaluate`:
evaluating at the returned instant shows the flipped comparison (no "+1s" fudge needed).

For date math in fixed units (``s m h d w``) and ``now()``, ``rel(t)`` is ``t`` plus a constant,
so the flip instant is solved directly; for months and years it is ``t`` plus a constant within
each calendar month, so the bisection stops as soon as it has narrowed down to such a stretch.
Both give exactly what the plain bisection (:func:`bisect_flip`) gives, which the tests check.
What to look at in a statement (the comparisons, each with its field compiled, and the
INCLUDEs) is worked out once per statement.

The result is the earliest *possible* change: the scheduler must re-evaluate the whole filter
then and emit only real transitions. Month/year date math follows Go's overflow arithmetic,
which is not monotone at month ends (days 29-31); there the instant is an approximation that
the next re-evaluation corrects.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .analysis import walk
from .ast import Between, Binary, Expr, FuncCall, Include, Literal, Statement
from .compiler import IdentityCache, Node, compile_expr
from .datemath import MAX_MS, MIN_MS, DateMath, parse_datemath
from .values import NOT_OK, to_ms

_FLIP = {">": "<", ">=": "<=", "<": ">", "<=": ">=", "=": "=", "==": "==", "!=": "!="}
_ORDER = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
Relative = Callable[[int], int]


@dataclass(frozen=True)
class Clock:
    """A term that depends on the clock alone: date math, or ``now()`` when ``datemath`` is None.

    ``offset`` is set when ``rel(t) = t + offset`` (fixed units, and ``now()`` with 0) as long
    as the result stays within years 1..9999; months and years have none.
    """

    datemath: DateMath | None
    offset: int | None

    def at(self, t: int) -> int:
        """``rel(t)`` in epoch ms."""
        dm = self.datemath
        return t if dm is None else _pinned(dm, t, dm.apply(t))


def _pinned(dm: DateMath, t: int, result: int | None) -> int:
    # Outside years 1..9999 pin to the edge so the function stays monotone.
    return result if result is not None else (MAX_MS if dm.amount > 0 or t > 0 else -MAX_MS)


def _clock(node: Expr) -> Clock | None:
    """The clock term ``node`` stands for, if it depends on the clock alone, else None."""
    if isinstance(node, Literal) and isinstance(node.value, str):
        dm = parse_datemath(node.value)
        return None if dm is None else Clock(dm, dm.fixed_ms)
    if isinstance(node, FuncCall) and node.name == "now" and not node.args:
        return Clock(None, 0)
    if isinstance(node, FuncCall) and node.name == "todate" and len(node.args) == 1:
        return _clock(node.args[0])
    return None


def is_time_relative(node: Expr) -> bool:
    return _clock(node) is not None


def bisect_flip(op: str, ct_ms: int, rel: Relative, now_ms: int) -> int | None:
    """Smallest ``t > now_ms`` where ``ct OP rel(t)`` differs from its value at ``now_ms``."""
    compare = _ORDER[op]
    ct_seconds = ct_ms // 1000
    start = compare(ct_seconds, rel(now_ms) // 1000)
    if now_ms >= MAX_MS or compare(ct_seconds, rel(MAX_MS) // 1000) == start:
        return None
    lo, hi = now_ms, MAX_MS  # invariant: truth(lo) == start != truth(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if compare(ct_seconds, rel(mid) // 1000) == start:
            lo = mid
        else:
            hi = mid
    return hi


def linear_flip(op: str, ct_ms: int, offset: int, now_ms: int) -> int | None:
    """:func:`bisect_flip` for ``rel(t) = min(t + offset, MAX_MS)``, solved directly.

    In whole seconds, ``ct > rel`` and ``ct <= rel`` turn on ``rel >= ct_seconds * 1000``,
    ``ct >= rel`` and ``ct < rel`` on ``rel >= (ct_seconds + 1) * 1000``; ``rel`` only grows,
    so the truth flips once, when ``rel`` first reaches that threshold, or never.
    """
    ct_seconds = ct_ms // 1000
    threshold = (ct_seconds if op in (">", "<=") else ct_seconds + 1) * 1000
    if now_ms >= MAX_MS or min(now_ms + offset, MAX_MS) >= threshold:
        return None  # out of range, or already past the threshold
    flip = threshold - offset
    return flip if threshold <= MAX_MS and flip <= MAX_MS else None


_DAY_MS = 86_400_000
#: Any span this short touches at most two calendar months.
_TWO_MONTHS_SPAN = 28 * _DAY_MS


def calendar_flip(op: str, ct_ms: int, dm: DateMath, now_ms: int) -> int | None:
    """:func:`bisect_flip` for month/year date math: the same result in fewer, cheaper steps.

    The truth of ``ct OP rel(t)`` is fixed by whether ``rel(t)`` has reached a threshold (see
    :func:`linear_flip`), and ``AddDate`` keeps the day and time of day, so ``rel(t) = t + c``
    with ``c`` depending only on the calendar month of ``t`` and lying between 28 and 31 days
    per month added. The bisection below takes the same steps as :func:`bisect_flip`, but
    decides a midpoint from those bounds when they suffice, and once the interval spans at
    most two months with the same ``c`` (the truth is monotone there) it solves for the flip.
    """
    ct_seconds = ct_ms // 1000
    threshold = (ct_seconds if op in (">", "<=") else ct_seconds + 1) * 1000
    months = dm.amount * (12 if dm.unit == "y" else 1)
    c_low, c_high = sorted((months * 28 * _DAY_MS, months * 31 * _DAY_MS))

    def reached(t: int) -> bool:
        if t >= MIN_MS and t + c_low >= MIN_MS and t + c_high <= MAX_MS:  # never pinned
            if t + c_low >= threshold:
                return True
            if t + c_high < threshold:
                return False
        return _pinned(dm, t, dm.apply(t)) >= threshold

    start = reached(now_ms)
    if now_ms >= MAX_MS or reached(MAX_MS) == start:
        return None
    lo, hi = now_ms, MAX_MS  # invariant: reached(lo) == start != reached(hi)
    while hi - lo > 1:
        if hi - lo <= _TWO_MONTHS_SPAN:
            flip = _flip_in_linear_stretch(dm, threshold, lo, hi)
            if flip is not None:
                return flip
        mid = (lo + hi) // 2
        if reached(mid) == start:
            lo = mid
        else:
            hi = mid
    return hi


def _flip_in_linear_stretch(dm: DateMath, threshold: int, lo: int, hi: int) -> int | None:
    """Where ``rel`` reaches ``threshold`` in ``(lo, hi]`` if ``rel(t) = t + c`` all through it."""
    lo_rel, hi_rel = dm.apply(lo), dm.apply(hi)
    if lo_rel is None or hi_rel is None or lo_rel - lo != hi_rel - hi:
        return None
    flip = threshold - (lo_rel - lo)
    return flip if lo < flip <= hi else None


def first_flip(op: str, ct_ms: int, clock: Clock, now_ms: int) -> int | None:
    offset, dm = clock.offset, clock.datemath
    if offset is not None and now_ms + offset >= MIN_MS:
        return linear_flip(op, ct_ms, offset, now_ms)  # rel(t) stays linear from now on
    if dm is not None and offset is None:
        return calendar_flip(op, ct_ms, dm, now_ms)
    return bisect_flip(op, ct_ms, clock.at, now_ms)


def _one_sided(op: str) -> tuple[str, ...]:
    if op in ("=", "==", "!="):
        return (">=", "<=")
    return (op,)


@dataclass(frozen=True)
class _Comparison:
    """``field OP clock`` somewhere in the statement (the clock already moved to the right)."""

    parts: tuple[str, ...]  # the one-sided comparisons that make up OP
    field: Node
    clock: Clock

    def collect(self, profile: Mapping[str, Any], now_ms: int, found: list[int]) -> None:
        """Record flips of ``field OP clock`` for each time the field holds."""
        value = self.field(profile, now_ms, None)
        values = value if isinstance(value, list) else [value]
        for item in values:
            ct = None if item is NOT_OK else to_ms(item, now_ms)
            if ct is None:
                continue
            for part in self.parts:
                flip = first_flip(part, ct, self.clock, now_ms)
                if flip is not None:
                    found.append(flip)


def _comparison(op: str, field: Expr, clock: Clock) -> _Comparison:
    return _Comparison(_one_sided(op), compile_expr(field), clock)


def _plan(target: Statement | Expr) -> tuple[_Comparison | str, ...]:
    """Each clock comparison, and each INCLUDE target (a str), in tree order."""
    steps: list[_Comparison | str] = []
    for node in walk(target.expr if isinstance(target, Statement) else target):
        if isinstance(node, Binary) and node.op in _FLIP:
            left, right = _clock(node.left), _clock(node.right)
            if right is not None and left is None:
                steps.append(_comparison(node.op, node.left, right))
            elif left is not None and right is None:
                steps.append(_comparison(_FLIP[node.op], node.right, left))
        elif isinstance(node, Between) and _clock(node.value) is None:
            low, high = _clock(node.low), _clock(node.high)
            if low is not None:
                steps.append(_comparison(">", node.value, low))
            if high is not None:
                steps.append(_comparison("<", node.value, high))
        elif isinstance(node, Include):
            steps.append(node.target)
    return tuple(steps)


_PLANS: IdentityCache[tuple[_Comparison | str, ...]] = IdentityCache(_plan)


def next_boundary(
    target: Statement | Expr,
    profile: Mapping[str, Any],
    *,
    now_ms: int,
    include_boundary: Callable[[str], int | None] | None = None,
) -> int | None:
    """Earliest epoch ms ``> now_ms`` at which the truth may change by time alone, or None.

    ``include_boundary(target)``, if given, supplies the next boundary of an INCLUDEd segment
    for this profile (the caller resolves includes and owns cycle detection).
    """
    found: list[int] = []
    for step in _PLANS.get(target):
        if isinstance(step, str):
            if include_boundary is not None:
                included = include_boundary(step)
                if included is not None:
                    found.append(included)
        else:
            step.collect(profile, now_ms, found)
    later = [t for t in found if t > now_ms]
    return min(later) if later else None
