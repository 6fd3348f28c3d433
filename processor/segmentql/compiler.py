"""Compile a SegmentQL expression once into nested closures (spec §1.4, §1.7).

:class:`~.evaluator.Evaluator` walks the tree and is the reference for the semantics; a compiled
expression gives the same value for every node without walking the tree or dispatching on node
types per evaluation. Each compiled node is a function ``(profile, now_ms, resolve_include)``
returning what ``Evaluator.value`` returns for that node: a value, MISSING or NOT_OK. Work that
does not depend on the profile or the clock is done at compile time: literal operands, their
coercions, IN sets and LIKE regexes (see :mod:`constant_ops`).

Fields are read in the same order as the tree walker reads them, and short-circuits stop at the
same child, so a lazy profile (the engine's ``ProfileView``) computes the same values.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

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
from .constant_ops import (
    between_test,
    constant_test,
    generic_apply,
    membership_test,
)
from .functions import FUNCTIONS
from .operators import between
from .registry import CallContext
from .values import MISSING, NOT_OK, lookup, to_number

#: ``resolve_include(target)`` answers whether the profile is in segment ``target`` (id or
#: slug): True/False, None when that segment's own evaluation was not-ok; it raises
#: ``LookupError`` when no such segment exists.
IncludeResolver = Callable[[str], "bool | None"]
Profile = Mapping[str, Any]
#: A compiled node: ``node(profile, now_ms, resolve_include) -> value | MISSING | NOT_OK``.
Node = Callable[[Profile, int, "IncludeResolver | None"], Any]

_ARITHMETIC = frozenset({"+", "-", "*", "/", "%"})

T = TypeVar("T")


class IdentityCache(Generic[T]):
    """What was built for each object, by identity, for as long as that object lives.

    Statements are frozen but may hold unhashable WITH values, and hashing a tree by structure
    on every evaluation would cost what compiling saves; a weak reference drops the entry when
    the statement goes away, so nothing is pinned and ids are never confused.
    """

    def __init__(self, build: Callable[[Any], T]) -> None:
        self._build = build
        self._entries: dict[int, tuple[weakref.ref[Any], T]] = {}

    def get(self, obj: Any) -> T:
        key = id(obj)
        entry = self._entries.get(key)
        if entry is not None and entry[0]() is obj:
            return entry[1]
        built = self._build(obj)
        entries = self._entries

        def forget(ref: weakref.ref[Any]) -> None:
            current = entries.get(key)
            if current is not None and current[0] is ref:
                del entries[key]

        entries[key] = (weakref.ref(obj, forget), built)
        return built


def _compile_target(target: Statement | Expr) -> Node:
    return compile_expr(target.expr if isinstance(target, Statement) else target)


_COMPILED: IdentityCache[Node] = IdentityCache(_compile_target)

#: ``compiled(target)``: the compiled form of a statement's expression (or of an expression),
#: built on first use and kept while the target lives.
compiled: Callable[[Statement | Expr], Node] = _COMPILED.get


def compile_expr(node: Expr) -> Node:
    """Compile one expression tree; raises TypeError for something that is not a node."""
    match node:
        case Literal(value=value):
            constant = MISSING if value is None else value
            return lambda p, n, i: constant
        case Ident(parts=parts):
            return _ident(parts)
        case MatchAll():
            return lambda p, n, i: True
        case ListExpr(items=items):
            return _list(items)
        case Binary():
            return _binary(node)
        case Between(value=value, low=low, high=high):
            return _between(value, low, high)
        case Not(operand=operand):
            return _not(operand)
        case Negate(operand=operand):
            return _negate(operand)
        case Logical(op="and", args=args):
            return _and(args)
        case Logical(args=args):
            return _or(args)
        case Exists(operand=operand):
            return _exists(operand)
        case Include(target=target):
            return _include(target)
        case FuncCall(name=name, args=args):
            return _call(name, args)
    raise TypeError(f"not a SegmentQL expression node: {node!r}")


def _simple_field(node: Expr) -> str | None:
    """The key of a one-part, dot-free field reference: read with one ``in`` and one ``[]``."""
    if isinstance(node, Ident) and len(node.parts) == 1 and "." not in node.parts[0]:
        return node.parts[0]
    return None


def _ident(parts: tuple[str, ...]) -> Node:
    name = _simple_field(Ident(parts))
    if name is None:
        return lambda p, n, i: lookup(p, parts)

    def field(p: Profile, n: int, i: IncludeResolver | None) -> Any:
        if name in p:
            value = p[name]
            return MISSING if value is None else value
        return MISSING

    return field


def _list(items: tuple[Expr, ...]) -> Node:
    fns = tuple(compile_expr(item) for item in items)

    def list_(p: Profile, n: int, i: IncludeResolver | None) -> Any:
        values = [fn(p, n, i) for fn in fns]
        for value in values:
            if value is NOT_OK:
                return NOT_OK
        return [value for value in values if value is not MISSING]

    return list_


def _constant_list(node: Expr) -> list[Any] | None:
    """The value of a list of literals (Nones dropped, as a missing item is), else None."""
    if isinstance(node, ListExpr) and all(isinstance(item, Literal) for item in node.items):
        return [item.value for item in node.items if isinstance(item, Literal)
                and item.value is not None]
    return None


def _missing_result(op: str) -> Any:
    """A comparison with a missing operand: ``!=`` is true, arithmetic not-ok, others false."""
    if op == "!=":
        return True
    return NOT_OK if op in _ARITHMETIC else False


def _binary(node: Binary) -> Node:
    op, right = node.op, node.right
    if isinstance(right, Literal) and right.value is None:
        return _null_comparison(op, compile_expr(node.left))
    items = _constant_list(right) if op in ("in", "intersects") else None
    if items is not None:
        test = membership_test(op, items)
    elif isinstance(right, Literal):
        test = constant_test(op, right.value)
    else:
        return _binary_general(op, compile_expr(node.left), compile_expr(right))
    missing = _missing_result(op)
    name = _simple_field(node.left)
    if name is not None:
        def field_test(p: Profile, n: int, i: IncludeResolver | None) -> Any:
            if name in p:
                value = p[name]
                if value is not None:
                    return test(value, n)
            return missing

        return field_test
    left = compile_expr(node.left)

    def value_test(p: Profile, n: int, i: IncludeResolver | None) -> Any:
        value = left(p, n, i)
        if value is NOT_OK:
            return NOT_OK
        if value is MISSING:
            return missing
        return test(value, n)

    return value_test


def _binary_general(op: str, left: Node, right: Node) -> Node:
    apply = generic_apply(op)
    missing = _missing_result(op)

    def binary(p: Profile, n: int, i: IncludeResolver | None) -> Any:
        lv, rv = left(p, n, i), right(p, n, i)
        if lv is NOT_OK or rv is NOT_OK:
            return NOT_OK
        if lv is MISSING or rv is MISSING:
            return missing
        return apply(lv, rv, n)

    return binary


def _null_comparison(op: str, left: Node) -> Node:
    """``x = NULL`` / ``x IS NULL`` is true when x is missing; ``!=`` the reverse."""
    if op in ("=", "=="):
        def is_null(p: Profile, n: int, i: IncludeResolver | None) -> Any:
            value = left(p, n, i)
            return NOT_OK if value is NOT_OK else value is MISSING

        return is_null
    if op == "!=":
        def is_not_null(p: Profile, n: int, i: IncludeResolver | None) -> Any:
            value = left(p, n, i)
            return NOT_OK if value is NOT_OK else value is not MISSING

        return is_not_null

    def not_ok(p: Profile, n: int, i: IncludeResolver | None) -> Any:
        left(p, n, i)  # still evaluated, as the tree walker does (it may resolve includes)
        return NOT_OK

    return not_ok


def _between(value: Expr, low: Expr, high: Expr) -> Node:
    fv, flo, fhi = compile_expr(value), compile_expr(low), compile_expr(high)
    numeric = None
    if isinstance(low, Literal) and isinstance(high, Literal):
        numeric = between_test(low.value, high.value)
    if numeric is not None:
        test = numeric

        def between_constants(p: Profile, n: int, i: IncludeResolver | None) -> Any:
            v = fv(p, n, i)
            return NOT_OK if v is NOT_OK or v is MISSING else test(v, n)

        return between_constants

    def between_(p: Profile, n: int, i: IncludeResolver | None) -> Any:
        v, lo, hi = fv(p, n, i), flo(p, n, i), fhi(p, n, i)
        for x in (v, lo, hi):
            if x is NOT_OK or x is MISSING:
                return NOT_OK
        return between(v, lo, hi, n)

    return between_


def _not(operand: Expr) -> Node:
    if isinstance(operand, Include):
        return _not_include(operand.target)
    fn = compile_expr(operand)

    def not_(p: Profile, n: int, i: IncludeResolver | None) -> Any:
        result = fn(p, n, i)
        if result is True:
            return False
        if result is False:
            return True
        return NOT_OK

    return not_


def _negate(operand: Expr) -> Node:
    fn = compile_expr(operand)

    def negate(p: Profile, n: int, i: IncludeResolver | None) -> Any:
        number = to_number(fn(p, n, i))
        return NOT_OK if number is None else -number

    return negate


def _and(args: tuple[Expr, ...]) -> Node:
    fns = tuple(compile_expr(arg) for arg in args)
    if len(fns) == 2:
        first, second = fns

        def and2(p: Profile, n: int, i: IncludeResolver | None) -> Any:
            result = first(p, n, i)
            if result is not True:
                return False if result is False else NOT_OK
            result = second(p, n, i)
            if result is not True:
                return False if result is False else NOT_OK
            return True

        return and2

    def and_(p: Profile, n: int, i: IncludeResolver | None) -> Any:
        for fn in fns:
            result = fn(p, n, i)
            if result is not True:
                return False if result is False else NOT_OK
        return True

    return and_


def _or(args: tuple[Expr, ...]) -> Node:
    fns = tuple(compile_expr(arg) for arg in args)

    def or_(p: Profile, n: int, i: IncludeResolver | None) -> Any:
        for fn in fns:  # noqa: SIM110 - any() over a generator costs more on this hot path
            if fn(p, n, i) is True:
                return True
        return False

    return or_


def _exists(operand: Expr) -> Node:
    name = _simple_field(operand)
    if name is not None:
        return lambda p, n, i: name in p and p[name] is not None
    fn = compile_expr(operand)

    def exists(p: Profile, n: int, i: IncludeResolver | None) -> Any:
        result = fn(p, n, i)
        return NOT_OK if result is NOT_OK else result is not MISSING

    return exists


def _membership(target: str, i: IncludeResolver | None) -> Any:
    """The INCLUDEd segment's answer (None when it is not ok), or NOT_OK when unresolvable."""
    if i is None:
        return NOT_OK
    try:
        return i(target)
    except LookupError:
        return NOT_OK


def _include(target: str) -> Node:
    """INCLUDE as a value: a not-ok or unresolvable segment is NOT_OK."""

    def include(p: Profile, n: int, i: IncludeResolver | None) -> Any:
        member = _membership(target, i)
        return NOT_OK if member is None or member is NOT_OK else bool(member)

    return include


def _not_include(target: str) -> Node:
    """NOT INCLUDE: unresolvable stays NOT_OK, but NOT of a not-ok segment is true."""

    def not_include(p: Profile, n: int, i: IncludeResolver | None) -> Any:
        member = _membership(target, i)
        if member is NOT_OK:
            return NOT_OK
        return True if member is None else not member

    return not_include


def _call(name: str, args: tuple[Expr, ...]) -> Node:
    spec = FUNCTIONS[name]
    impl, guarded = spec.impl, not spec.sees_missing
    fns = tuple(compile_expr(arg) for arg in args)

    def call(p: Profile, n: int, i: IncludeResolver | None) -> Any:
        values = [fn(p, n, i) for fn in fns]
        if guarded:
            for value in values:
                if value is MISSING or value is NOT_OK:
                    return NOT_OK
        result = impl(values, CallContext(n))
        return MISSING if result is None else result

    return call
