"""SegmentQL syntax tree: frozen, hashable-by-structure nodes and the parsed statement.

Nodes compare by value, so ``parse(print_statement(s)) == s`` is a meaningful test. The tree
keeps what changes meaning (operators as written, ``=`` vs ``==``) and drops what does not
(parentheses, keyword case, comments inside the body, ``<>`` vs ``!=``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias
from typing import Literal as TypingLiteral

LiteralValue: TypeAlias = str | int | float | bool | None

#: Comparison operators as stored in :class:`Binary` (``<>`` and ``IS NOT`` become ``!=``).
COMPARISON_OPS = frozenset({"=", "==", "!=", ">", ">=", "<", "<="})
#: Word operators stored in :class:`Binary`, lower-case.
WORD_OPS = frozenset({"in", "intersects", "like", "contains"})
ARITHMETIC_OPS = frozenset({"+", "-", "*", "/", "%"})


@dataclass(frozen=True)
class Literal:
    """A string, number, boolean (bare ``true``/``false``) or ``NULL``."""

    value: LiteralValue


@dataclass(frozen=True)
class Ident:
    """A profile field reference.

    ``parts`` has one element for an unquoted name such as ``a.b`` (looked up verbatim, then as
    map ``a`` key ``b``) and one element per quoted segment for `` `a.b`.`c` ``.
    """

    parts: tuple[str, ...]

    @property
    def name(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True)
class ListExpr:
    """``("a", "b")`` after IN/INTERSECTS, or a ``["a", "b"]`` array literal."""

    items: tuple[Expr, ...]


@dataclass(frozen=True)
class MatchAll:
    """``*`` or ``match_all``: every entity matches."""


@dataclass(frozen=True)
class Binary:
    """``left op right`` for comparison, word (in/intersects/like/contains) and arithmetic ops."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Between:
    """``value BETWEEN low AND high`` — exclusive at both ends."""

    value: Expr
    low: Expr
    high: Expr


@dataclass(frozen=True)
class Not:
    """``NOT x`` / ``!x`` / ``x NOT IN (...)``: inverts an ok boolean, keeps not-ok."""

    operand: Expr


@dataclass(frozen=True)
class Negate:
    """Unary minus on a non-literal operand."""

    operand: Expr


@dataclass(frozen=True)
class Logical:
    """``AND``/``OR`` over any number of children (infix chains and ``AND ( a, b )`` groups)."""

    op: TypingLiteral["and", "or"]
    args: tuple[Expr, ...]


@dataclass(frozen=True)
class Exists:
    """``EXISTS x``: true unless ``x`` is missing or null."""

    operand: Expr


@dataclass(frozen=True)
class Include:
    """``INCLUDE target``: membership of another segment, by id or slug."""

    target: str


@dataclass(frozen=True)
class FuncCall:
    """``name(args...)``; ``name`` is lower-case and known to the function registry."""

    name: str
    args: tuple[Expr, ...]


Expr: TypeAlias = (
    Literal | Ident | ListExpr | MatchAll | Binary | Between | Not | Negate | Logical | Exists
    | Include | FuncCall
)

WithValue: TypeAlias = Any  # JSON value: WITH {"k": [1, 2]} keeps nested structure


@dataclass(frozen=True)
class Statement:
    """One parsed ``FILTER`` or ``SELECT`` statement.

    ``from_table`` is ``None`` when no FROM was written (Lytics then means ``user``);
    ``alias`` is lower-cased as Lytics does; ``with_props`` keeps WITH pairs in order;
    ``columns`` is set only for the SELECT form; ``description`` holds leading comments.
    """

    expr: Expr
    from_table: str | None = None
    alias: str | None = None
    with_props: tuple[tuple[str, WithValue], ...] = ()
    limit: int | None = None
    columns: tuple[Expr, ...] | None = None
    description: str | None = None

    @property
    def with_dict(self) -> dict[str, WithValue]:
        return dict(self.with_props)


def children(node: Expr) -> tuple[Expr, ...]:
    """Direct sub-expressions of ``node``, left to right."""
    match node:
        case ListExpr(items=items):
            return items
        case Binary(left=left, right=right):
            return (left, right)
        case Between(value=value, low=low, high=high):
            return (value, low, high)
        case Not(operand=operand) | Negate(operand=operand) | Exists(operand=operand):
            return (operand,)
        case Logical(args=args) | FuncCall(args=args):
            return args
    return ()
