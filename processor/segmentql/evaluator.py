"""Evaluate a SegmentQL expression against one profile (spec §1.4, §1.7).

Internally every node yields a value, :data:`MISSING` (absent/null field) or :data:`NOT_OK`.
A statement matches only when the result is exactly ``True``. The rules that make SegmentQL
differ from plain three-valued logic live here:

* a comparison whose operand is missing is ok-false, except ``!=`` which is ok-true; so
  ``NOT missing > 5`` matches (quirk 1);
* ``BETWEEN`` on a missing value is not-ok, and NOT of not-ok stays not-ok;
* ``AND`` is not-ok as soon as it meets a not-ok child (quirk 2); ``OR`` skips not-ok children;
* ``INCLUDE`` that cannot be resolved is not-ok, even under NOT; one that resolves to a not-ok
  evaluation is not-ok, but its NOT is true.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import operators
from .ast import (
    Between,
    Binary,
    Exists,
    Expr,
    FuncCall,
    Ident,
    Include,
    ListExpr,
    Literal,
    Logical,
    MatchAll,
    Negate,
    Not,
    Statement,
)
from .compiler import IncludeResolver, compiled
from .functions import FUNCTIONS
from .registry import CallContext
from .values import MISSING, NOT_OK, lookup, to_number

__all__ = ["Evaluator", "IncludeResolver", "evaluate"]


class _IncludeNotOk:
    """Marks "include resolved, evaluation not-ok" so that NOT can turn it into True."""


_INCLUDE_NOT_OK = _IncludeNotOk()


class Evaluator:
    """One evaluation of one expression over one profile at one instant, walking the tree.

    The reference statement of the semantics: :func:`evaluate` runs the compiled form
    (``compiler.py``), which the tests check against this class on random trees and profiles.
    """

    def __init__(
        self,
        profile: Mapping[str, Any],
        now_ms: int,
        resolve_include: IncludeResolver | None = None,
    ) -> None:
        self.profile = profile
        self.now_ms = now_ms
        self.resolve_include = resolve_include
        self.ctx = CallContext(now_ms)

    def value(self, node: Expr) -> Any:
        """The node's value, MISSING or NOT_OK (never the internal include marker)."""
        result = self._eval(node)
        return NOT_OK if result is _INCLUDE_NOT_OK else result

    def _eval(self, node: Expr) -> Any:
        match node:
            case Literal(value=value):
                return MISSING if value is None else value
            case Ident(parts=parts):
                return lookup(self.profile, parts)
            case MatchAll():
                return True
            case ListExpr(items=items):
                return self._list(items)
            case Binary():
                return self._binary(node)
            case Between(value=value, low=low, high=high):
                return self._between(value, low, high)
            case Not(operand=operand):
                return self._not(operand)
            case Negate(operand=operand):
                number = to_number(self.value(operand))
                return NOT_OK if number is None else -number
            case Logical(op="and", args=args):
                return self._and(args)
            case Logical(args=args):
                return self._or(args)
            case Exists(operand=operand):
                result = self.value(operand)
                return NOT_OK if result is NOT_OK else result is not MISSING
            case Include(target=target):
                return self._include(target)
            case FuncCall(name=name, args=args):
                return self._call(name, args)
        raise TypeError(f"not a SegmentQL expression node: {node!r}")

    def _list(self, items: tuple[Expr, ...]) -> Any:
        values = [self.value(item) for item in items]
        if any(v is NOT_OK for v in values):
            return NOT_OK
        return [v for v in values if v is not MISSING]

    def _not(self, operand: Expr) -> Any:
        result = self._eval(operand)
        if result is _INCLUDE_NOT_OK:
            return True
        if isinstance(result, bool):
            return not result
        return NOT_OK

    def _and(self, args: tuple[Expr, ...]) -> Any:
        for arg in args:
            result = self.value(arg)
            if not isinstance(result, bool):
                return NOT_OK
            if not result:
                return False
        return True

    def _or(self, args: tuple[Expr, ...]) -> Any:
        return any(self.value(arg) is True for arg in args)

    def _include(self, target: str) -> Any:
        if self.resolve_include is None:
            return NOT_OK
        try:
            member = self.resolve_include(target)
        except LookupError:
            return NOT_OK
        return _INCLUDE_NOT_OK if member is None else bool(member)

    def _call(self, name: str, args: tuple[Expr, ...]) -> Any:
        spec = FUNCTIONS[name]
        values = [self.value(arg) for arg in args]
        if not spec.sees_missing and any(v is MISSING or v is NOT_OK for v in values):
            return NOT_OK
        result = spec.impl(values, self.ctx)
        return MISSING if result is None else result

    def _between(self, value: Expr, low: Expr, high: Expr) -> Any:
        v, lo, hi = self.value(value), self.value(low), self.value(high)
        if any(x is NOT_OK or x is MISSING for x in (v, lo, hi)):
            return NOT_OK
        return operators.between(v, lo, hi, self.now_ms)

    def _binary(self, node: Binary) -> Any:
        op = node.op
        left = self.value(node.left)
        right = self.value(node.right)
        if left is NOT_OK or right is NOT_OK:
            return NOT_OK
        if isinstance(node.right, Literal) and node.right.value is None:
            return _null_comparison(op, left)
        if left is MISSING or right is MISSING:
            return _missing_comparison(op)
        return self._apply(op, left, right)

    def _apply(self, op: str, left: Any, right: Any) -> Any:
        now = self.now_ms
        if op in ("=", "=="):
            return operators.equal(left, right, now)
        if op == "!=":
            result = operators.equal(left, right, now)
            return result if result is NOT_OK else not result
        if op in (">", ">=", "<", "<="):
            return operators.ordered(op, left, right, now)
        if op in ("in", "intersects"):
            items = right if isinstance(right, list) else [right]
            fn = operators.member_of if op == "in" else operators.intersects
            return fn(left, items, now)
        if op == "contains":
            return operators.contains(left, right)
        if op == "like":
            return operators.like(left, right)
        return operators.arithmetic(op, left, right)


def _null_comparison(op: str, left: Any) -> Any:
    """``x = NULL`` / ``x IS NULL`` is true when x is missing; ``!=`` the reverse."""
    if op in ("=", "=="):
        return left is MISSING
    if op == "!=":
        return left is not MISSING
    return NOT_OK


def _missing_comparison(op: str) -> Any:
    if op == "!=":
        return True
    if op in ("+", "-", "*", "/", "%"):
        return NOT_OK
    return False


def evaluate(
    target: Statement | Expr,
    profile: Mapping[str, Any],
    *,
    now_ms: int,
    resolve_include: IncludeResolver | None = None,
) -> bool:
    """Whether ``profile`` matches ``target`` at ``now_ms`` (epoch milliseconds).

    Pure and deterministic: the clock is an argument, includes are answered by the caller
    (which also owns cycle detection). Never raises for any profile content. The target is
    compiled on first use and the compiled form kept for as long as the target lives.
    """
    return compiled(target)(profile, now_ms, resolve_include) is True
