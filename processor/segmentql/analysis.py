"""Static questions about a statement: which fields it reads, which segments it includes,
and its ``ast`` JSON (spec §1.6)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

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
    children,
)
from .printer import print_literal


def walk(node: Expr) -> Iterator[Expr]:
    """``node`` and all its descendants, depth-first, parents before children."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(children(current)))


def _expr_of(target: Statement | Expr) -> Expr:
    return target.expr if isinstance(target, Statement) else target


def referenced_fields(target: Statement | Expr) -> frozenset[str]:
    """Top-level profile keys whose change can change the expression's value.

    For ``a.b`` both ``"a.b"`` (read verbatim first) and ``"a"`` (the map it falls back to)
    are reported, so an engine indexing segments by changed key never misses one. Included
    segments' fields are not expanded: see :func:`included_segments`.
    """
    fields: set[str] = set()
    for node in walk(_expr_of(target)):
        if isinstance(node, Ident):
            first = node.parts[0]
            fields.add(first)
            while "." in first:
                first = first.rsplit(".", 1)[0]
                fields.add(first)
    return frozenset(fields)


def included_segments(target: Statement | Expr) -> frozenset[str]:
    """Targets of every ``INCLUDE`` (ids or slugs, as written)."""
    return frozenset(n.target for n in walk(_expr_of(target)) if isinstance(n, Include))


def uses_time(target: Statement | Expr) -> bool:
    """Whether the expression may change with the clock alone (date math or ``now()``)."""
    from .boundaries import is_time_relative

    return any(is_time_relative(n) for n in walk(_expr_of(target)))


def to_ast_json(target: Statement | Expr) -> dict[str, Any]:
    """The segment's ``ast`` field: ``{"op", "args"}`` / ``{"ident"}`` / ``{"val"}`` nodes.

    Literals are strings as qlbridge writes them (numbers in canonical text, ``"true"``,
    ``"NULL"``); functions are ``{"op": "expr", "args": [{"ident": name}, ...]}``; negations
    wrap in ``{"op": "not"}``; ``*`` is ``{"ident": "*"}``.
    """
    return _json(_expr_of(target))


def _op(op: str, *args: Expr) -> dict[str, Any]:
    return {"op": op, "args": [_json(a) for a in args]}


def _json(node: Expr) -> dict[str, Any]:
    match node:
        case Literal(value=value):
            text = value if isinstance(value, str) else print_literal(value)
            return {"val": text}
        case Ident():
            return {"ident": node.name}
        case MatchAll():
            return {"ident": "*"}
        case ListExpr(items=items):
            return _op("array", *items)
        case Binary(op=op, left=left, right=right):
            return _op(op, left, right)
        case Between(value=value, low=low, high=high):
            return _op("between", value, low, high)
        case Not(operand=operand):
            return _op("not", operand)
        case Negate(operand=operand):
            return _op("-", operand)
        case Logical(op=op, args=args):
            return _op(op, *args)
        case Exists(operand=operand):
            return _op("exists", operand)
        case Include(target=target):
            return {"op": "include", "args": [{"ident": target}]}
        case FuncCall(name=name, args=args):
            return {"op": "expr", "args": [{"ident": name}, *(_json(a) for a in args)]}
    raise TypeError(f"not a SegmentQL expression node: {node!r}")
