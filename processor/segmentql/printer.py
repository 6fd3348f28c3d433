"""Canonical SegmentQL text for a tree: ``parse(print_statement(s)) == s``.

Canonical choices: keywords upper-case; every AND/OR is printed as a DSL group
``AND ( a, b )`` (so no precedence parentheses are ever needed for logic); negated word
operators print infix (``x NOT IN (...)``); identifiers are bare when the lexer would read them
back unchanged and back-quoted otherwise; strings double-quoted with ``""`` and ``\\\\`` escapes.
"""

from __future__ import annotations

import json
import math
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
)
from .lexer import KEYWORDS, is_ident_char, is_ident_start

# Binding strength of what a node prints as; an operand weaker than required gets parens.
_CMP, _ADD, _MUL, _UNARY, _PRIMARY = 3, 4, 5, 6, 7
_NEGATED_INFIX = frozenset({"in", "intersects", "like", "contains"})
_RESERVED = KEYWORDS | {"true", "false", "match_all"}


def quote_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '""') + '"'


def _is_bare_word(text: str, *, allow_digit_start: bool = False) -> bool:
    if not text or text.lower() in _RESERVED:
        return False
    if not (is_ident_start(text[0]) or (allow_digit_start and text[0] in "0123456789")):
        return False
    if text[0] == "." and len(text) > 1 and text[1].isdigit():
        return False
    if any(marker in text for marker in ("--", "//", "/*")):
        return False
    return all(is_ident_char(ch) for ch in text[1:])


def _quote_ident(text: str) -> str:
    return "`" + text.replace("`", "``") + "`"


def print_ident(parts: tuple[str, ...]) -> str:
    if len(parts) == 1:
        return parts[0] if _is_bare_word(parts[0]) else _quote_ident(parts[0])
    first = parts[0] if _is_bare_word(parts[0]) and "." not in parts[0] else \
        _quote_ident(parts[0])
    # Later parts are always quoted: a bare ".b" would merge into the first part.
    return ".".join([first, *(_quote_ident(p) for p in parts[1:])])


def print_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return quote_string(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"non-finite number {value!r} has no SegmentQL form")
        return repr(value)
    return str(value)


def _strength(node: Expr) -> int:
    match node:
        case Literal(value=value) if isinstance(value, int | float) and \
                not isinstance(value, bool) and (value < 0 or str(value).startswith("-")):
            return _UNARY  # "-5" cannot stand where a primary must (EXISTS -5)
        case Binary(op=op) if op in ("+", "-"):
            return _ADD
        case Binary(op=op) if op in ("*", "/", "%"):
            return _MUL
        case Binary() | Between() | Not():
            return _CMP
        case Exists() | Negate():
            return _UNARY
    return _PRIMARY


def _sub(node: Expr, required: int) -> str:
    text = print_expr(node)
    return text if _strength(node) >= required else f"({text})"


def print_expr(node: Expr) -> str:
    """Canonical text of one expression."""
    match node:
        case Literal(value=value):
            return print_literal(value)
        case Ident(parts=parts):
            return print_ident(parts)
        case MatchAll():
            return "*"
        case ListExpr(items=items):
            return _print_array(items)
        case Binary():
            return _print_binary(node, negated=False)
        case Between():
            return _print_between(node, negated=False)
        case Not(operand=operand):
            return _print_not(operand)
        case Negate(operand=operand):
            return f"-({print_expr(operand)})"
        case Logical(op=op, args=args):
            return f"{op.upper()} ( {', '.join(print_expr(a) for a in args)} )"
        case Exists(operand=operand):
            return f"EXISTS {_sub(operand, _PRIMARY)}"
        case Include(target=target):
            bare = _is_bare_word(target, allow_digit_start=True)
            return f"INCLUDE {target if bare else _quote_ident(target)}"
        case FuncCall(name=name, args=args):
            return f"{name}({', '.join(print_expr(a) for a in args)})"
    raise TypeError(f"not a SegmentQL expression node: {node!r}")


def _print_array(items: tuple[Expr, ...]) -> str:
    body = ", ".join(print_expr(item) for item in items)
    # "[a]" would read back as a bracket-quoted identifier; a leading space keeps it an array.
    return f"[ {body} ]" if body[:1].isalpha() or body[:1] in "_.@`'" else f"[{body}]"


def _print_binary(node: Binary, *, negated: bool) -> str:
    op = node.op
    left_strength = _ADD if op not in ("+", "-", "*", "/", "%") else (
        _ADD if op in ("+", "-") else _MUL)
    right_strength = {"+": _MUL, "-": _MUL, "*": _UNARY, "/": _UNARY, "%": _UNARY}.get(op, _ADD)
    left = _sub(node.left, left_strength)
    if op in ("in", "intersects"):
        right = _print_in_operand(node.right)
    else:
        right = _sub(node.right, right_strength)
    word = op.upper() if op in _NEGATED_INFIX else op
    return f"{left} {'NOT ' if negated else ''}{word} {right}"


def _print_in_operand(node: Expr) -> str:
    if isinstance(node, ListExpr):
        return f"({', '.join(print_expr(item) for item in node.items)})"
    return print_expr(node)


def _print_between(node: Between, *, negated: bool) -> str:
    word = "NOT BETWEEN" if negated else "BETWEEN"
    return (f"{_sub(node.value, _ADD)} {word} {_sub(node.low, _ADD)} AND "
            f"{_sub(node.high, _ADD)}")


def _print_not(operand: Expr) -> str:
    if isinstance(operand, Binary) and operand.op in _NEGATED_INFIX:
        return _print_binary(operand, negated=True)
    if isinstance(operand, Between):
        return _print_between(operand, negated=True)
    return f"NOT {_sub(operand, _CMP)}"


def _print_with(props: tuple[tuple[str, Any], ...]) -> str:
    simple = all(
        _is_bare_word(k) and (v is None or isinstance(v, str | bool | int | float))
        and not (isinstance(v, float) and not math.isfinite(v))
        for k, v in props
    )
    if simple:
        return ", ".join(f"{k} = {print_literal(v)}" for k, v in props)
    return json.dumps(dict(props), ensure_ascii=False)


def print_statement(stmt: Statement) -> str:
    """Canonical text of a statement, one line after any description comment lines."""
    lines = [f"-- {line}" for line in (stmt.description or "").splitlines() if line.strip()]
    if stmt.columns is not None:
        columns = ", ".join(print_expr(c) for c in stmt.columns)
        head = f"SELECT {columns} FROM {print_ident((stmt.from_table or 'user',))}"
        head += f" FILTER {print_expr(stmt.expr)}"
    else:
        head = f"FILTER {print_expr(stmt.expr)}"
        if stmt.from_table is not None:
            head += f" FROM {print_ident((stmt.from_table,))}"
    if stmt.limit is not None:
        head += f" LIMIT {stmt.limit}"
    if stmt.with_props:
        head += f" WITH {_print_with(stmt.with_props)}"
    if stmt.alias is not None:
        head += f" ALIAS {print_ident((stmt.alias,))}"
    return "\n".join([*lines, head])
