"""When can a segment's truth change with no new data? (spec §5.2)

For every comparison between a profile value ``Ct`` and a clock-relative term ``rel(t)``
(date math ``"now-30d"``, ``now()``, ``todate("now-3d")``), the comparison's truth at time ``t``
is ``sec(Ct) OP sec(rel(t))`` (second resolution, as the evaluator compares). ``rel`` grows with
``t``, so ``>``/``>=`` can only go true→false and ``<``/``<=`` false→true; ``=``/``!=`` and
``BETWEEN`` are split into such one-sided parts. The flip instant is found by bisection on
that monotone truth, so it is exact to the millisecond and agrees with :func:`evaluate`:
evaluating at the returned instant shows the flipped comparison (no "+1s" fudge needed).

The result is the earliest *possible* change: the scheduler must re-evaluate the whole filter
then and emit only real transitions. Month/year date math follows Go's overflow arithmetic,
which is not monotone at month ends (days 29-31); there the instant is an approximation that
the next re-evaluation corrects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .analysis import walk
from .ast import Between, Binary, Expr, FuncCall, Include, Literal, Statement
from .datemath import MAX_MS, DateMath, parse_datemath
from .evaluator import Evaluator
from .values import NOT_OK, to_ms

_FLIP = {">": "<", ">=": "<=", "<": ">", "<=": ">=", "=": "=", "==": "==", "!=": "!="}
Relative = Callable[[int], int]


def _relative(node: Expr) -> Relative | None:
    """``t -> rel(t)`` in epoch ms if ``node`` depends on the clock alone, else None."""
    if isinstance(node, Literal) and isinstance(node.value, str):
        dm = parse_datemath(node.value)
        return None if dm is None else _apply(dm)
    if isinstance(node, FuncCall) and node.name == "now" and not node.args:
        return lambda t: t
    if isinstance(node, FuncCall) and node.name == "todate" and len(node.args) == 1:
        return _relative(node.args[0])
    return None


def _apply(dm: DateMath) -> Relative:
    def rel(t: int) -> int:
        result = dm.apply(t)
        # Outside years 1..9999 pin to the edge so the function stays monotone.
        return result if result is not None else (MAX_MS if dm.amount > 0 or t > 0 else -MAX_MS)

    return rel


def is_time_relative(node: Expr) -> bool:
    return _relative(node) is not None


def _truth(op: str, ct_seconds: int, rel: Relative, t: int) -> bool:
    rs = rel(t) // 1000
    return {">": ct_seconds > rs, ">=": ct_seconds >= rs,
            "<": ct_seconds < rs, "<=": ct_seconds <= rs}[op]


def _first_flip(op: str, ct_ms: int, rel: Relative, now_ms: int) -> int | None:
    """Smallest ``t > now_ms`` where ``ct OP rel(t)`` differs from its value at ``now_ms``."""
    ct_seconds = ct_ms // 1000
    start = _truth(op, ct_seconds, rel, now_ms)
    if now_ms >= MAX_MS or _truth(op, ct_seconds, rel, MAX_MS) == start:
        return None
    lo, hi = now_ms, MAX_MS  # invariant: truth(lo) == start != truth(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _truth(op, ct_seconds, rel, mid) == start:
            lo = mid
        else:
            hi = mid
    return hi


def _one_sided(op: str) -> tuple[str, ...]:
    if op in ("=", "==", "!="):
        return (">=", "<=")
    return (op,)


class _BoundaryFinder:
    def __init__(self, profile: Mapping[str, Any], now_ms: int) -> None:
        self.evaluator = Evaluator(profile, now_ms)
        self.now_ms = now_ms
        self.found: list[int] = []

    def comparison(self, op: str, field: Expr, rel: Relative) -> None:
        """Record flips of ``field OP rel(t)`` for each time the field holds."""
        value = self.evaluator.value(field)
        values = value if isinstance(value, list) else [value]
        for item in values:
            ct = None if item is NOT_OK else to_ms(item, self.now_ms)
            if ct is None:
                continue
            for part in _one_sided(op):
                flip = _first_flip(part, ct, rel, self.now_ms)
                if flip is not None:
                    self.found.append(flip)

    def visit(self, node: Expr) -> None:
        if isinstance(node, Binary) and node.op in _FLIP:
            left, right = _relative(node.left), _relative(node.right)
            if right is not None and left is None:
                self.comparison(node.op, node.left, right)
            elif left is not None and right is None:
                self.comparison(_FLIP[node.op], node.right, left)
        elif isinstance(node, Between) and _relative(node.value) is None:
            low, high = _relative(node.low), _relative(node.high)
            if low is not None:
                self.comparison(">", node.value, low)
            if high is not None:
                self.comparison("<", node.value, high)


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
    expr = target.expr if isinstance(target, Statement) else target
    finder = _BoundaryFinder(profile, now_ms)
    for node in walk(expr):
        finder.visit(node)
        if isinstance(node, Include) and include_boundary is not None:
            included = include_boundary(node.target)
            if included is not None:
                finder.found.append(included)
    later = [t for t in finder.found if t > now_ms]
    return min(later) if later else None
