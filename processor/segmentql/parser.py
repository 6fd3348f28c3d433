"""Recursive-descent parser for SegmentQL expressions (spec §1.2).

Precedence, low to high: OR < AND < comparison and prefix NOT < ``+ -`` < ``* / %`` < unary
and primaries. ``AND ( a, b )`` / ``OR ( ... )`` groups take commas or newlines between
children; newlines are significant only directly inside such a group, so the token cursor
tracks a stack of "newline separates" modes. Statement clauses live in ``statement.py``.
"""

from __future__ import annotations

from collections.abc import Callable

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
)
from .cursor import TokenCursor, continues_expression, describe
from .datemath import datemath_problem
from .errors import SegmentQLError
from .functions import FUNCTIONS
from .lexer import Token

_CMP_OPS = frozenset({"=", "==", "!=", ">", ">=", "<", "<="})
_NEGATABLE = frozenset({"in", "intersects", "like", "contains", "between"})
#: Deepest nesting accepted (each parenthesis level counts twice, NOT and minus once); keeps every later recursive walk
#: (printer, evaluator) far from Python's recursion limit.
MAX_DEPTH = 100


class ExpressionParser:
    """Parses one expression starting at the cursor; leaves the cursor after it."""

    def __init__(self, cursor: TokenCursor) -> None:
        self.c = cursor
        self.depth = 0

    def _descend(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            tok = self.c.peek()
            raise SegmentQLError(
                f"expression nested more than {MAX_DEPTH} levels deep", tok.line, tok.col
            )

    def expression(self) -> Expr:
        return self._logical("or", ("or", "||"), self._and)

    def _and(self) -> Expr:
        return self._logical("and", ("and", "&&"), self._comparison)

    def _logical(self, op: str, words: tuple[str, str], operand: Callable[[], Expr]) -> Expr:
        args = [operand()]
        while True:
            self.c.skip_newlines_if(continues_expression)
            tok = self.c.peek()
            if not ((tok.kind == "KEYWORD" and tok.text == words[0]) or
                    (tok.kind == "OP" and tok.text == words[1])):
                break
            self.c.next()
            args.append(operand())
        if len(args) == 1:
            return args[0]
        return Logical("and" if op == "and" else "or", tuple(args))

    # -- comparison level -------------------------------------------------------------------
    def _comparison(self) -> Expr:
        self._descend()
        try:
            return self._comparison_inner()
        finally:
            self.depth -= 1

    def _comparison_inner(self) -> Expr:
        if self.c.is_kw("not") or self.c.is_op("!"):
            self.c.next()
            return Not(self._comparison())
        left = self._additive()
        self.c.skip_newlines_if(continues_expression)
        tok = self.c.peek()
        if tok.kind == "OP" and tok.text in _CMP_OPS:
            self.c.next()
            return Binary(tok.text, left, self._operand(f"value after '{tok.text}'"))
        if tok.kind == "KEYWORD":
            return self._word_comparison(left, tok)
        return left

    def _word_comparison(self, left: Expr, tok: Token) -> Expr:
        if tok.text == "is":
            self.c.next()
            negated = self.c.is_kw("not")
            if negated:
                self.c.next()
            right = self._operand("value after IS")
            return Binary("!=" if negated else "=", left, right)
        if tok.text == "not" and self.c.peek(1).kind == "KEYWORD" and \
                self.c.peek(1).text in _NEGATABLE:
            self.c.next()
            return Not(self._word_tail(left, self.c.next()))
        if tok.text in _NEGATABLE:
            return self._word_tail(left, self.c.next())
        return left

    def _word_tail(self, left: Expr, tok: Token) -> Expr:
        word = tok.text
        if word == "between":
            low = self._operand("lower bound after BETWEEN")
            if not (self.c.is_kw("and") or self.c.is_op("&&")):
                raise self.c.error("AND between the bounds of BETWEEN")
            self.c.next()
            return Between(left, low, self._operand("upper bound after BETWEEN ... AND"))
        if word in ("in", "intersects"):
            return Binary(word, left, self._in_operand(word))
        return Binary(word, left, self._operand(f"value after {word.upper()}"))

    def _in_operand(self, word: str) -> Expr:
        tok = self.c.peek()
        if tok.kind == "LPAREN":
            self.c.next()
            return ListExpr(self._items("RPAREN", "')'"))
        if tok.kind == "LBRACKET":
            return self._primary()
        if tok.kind in ("IDENT", "FUNC") or (tok.kind == "STRING" and word == "in"):
            return self._primary()
        raise self.c.error(f"list, identifier or function after {word.upper()}")

    def _operand(self, what: str) -> Expr:
        tok = self.c.peek()
        if not _starts_value(tok):
            raise self.c.error(what)
        return self._additive()

    # -- arithmetic ----------------------------------------------------------------------
    def _additive(self) -> Expr:
        left = self._multiplicative()
        while self.c.is_op("+", "-"):
            op = self.c.next().text
            left = Binary(op, left, self._operand_of(self._multiplicative, op))
        return left

    def _multiplicative(self) -> Expr:
        left = self._unary()
        while self.c.is_op("*", "/", "%"):
            op = self.c.next().text
            left = Binary(op, left, self._operand_of(self._unary, op))
        return left

    def _operand_of(self, parse: Callable[[], Expr], op: str) -> Expr:
        if not _starts_value(self.c.peek()):
            raise self.c.error(f"value after '{op}'")
        return parse()

    def _unary(self) -> Expr:
        self._descend()
        try:
            return self._unary_inner()
        finally:
            self.depth -= 1

    def _unary_inner(self) -> Expr:
        tok = self.c.peek()
        if tok.kind == "OP" and tok.text == "-":
            self.c.next()
            if self.c.peek().kind == "NUMBER":
                return Literal(-number_value(self.c.next()))  # fold "-5" into the literal
            return Negate(self._operand_of(self._unary, "-"))
        if (tok.kind == "KEYWORD" and tok.text == "not") or (tok.kind == "OP" and tok.text == "!"):
            return self._comparison()
        if tok.kind == "KEYWORD" and tok.text == "exists":
            self.c.next()
            if not _starts_value(self.c.peek()):
                raise self.c.error("field after EXISTS")
            return Exists(self._primary())
        return self._primary()

    def _group(self, op: str) -> Expr:
        self.c.expect("LPAREN", f"'(' after {op.upper()}")
        self.c.newline_modes.append(True)
        try:
            children = self._group_children(op)
        finally:
            self.c.newline_modes.pop()
        self.c.next()  # the ")" checked by _group_children
        if len(children) == 1:
            return children[0]  # a one-child group collapses to the child (spec §1.2)
        return Logical("and" if op == "and" else "or", tuple(children))

    def _group_children(self, op: str) -> list[Expr]:
        children: list[Expr] = []
        self._skip_separators()
        while self.c.peek().kind != "RPAREN":
            children.append(self.expression())
            tok = self.c.peek()
            if tok.kind in ("COMMA", "NEWLINE"):
                self._skip_separators()
            elif tok.kind != "RPAREN":
                raise self.c.error(f"',' or new line or ')' in {op.upper()} ( ... ) group")
        return children

    def _skip_separators(self) -> None:
        while self.c.peek().kind in ("COMMA", "NEWLINE"):
            self.c.next()

    # -- primaries -----------------------------------------------------------------------
    def _primary(self) -> Expr:
        tok = self.c.next()
        kind = tok.kind
        if kind == "NUMBER":
            return Literal(number_value(tok))
        if kind == "STRING":
            return self._string(tok)
        if kind == "IDENT":
            return _identifier(tok)
        if kind == "FUNC":
            return self._call(tok)
        if kind == "LPAREN":
            return self._parenthesised()
        if kind == "LBRACKET":
            return ListExpr(self._items("RBRACKET", "']'"))
        if kind == "OP" and tok.text == "*":
            return MatchAll()
        if kind == "KEYWORD" and tok.text == "null":
            return Literal(None)
        if kind == "KEYWORD" and tok.text == "include":
            return self._include()
        if kind == "KEYWORD" and tok.text in ("and", "or"):
            return self._group(tok.text)
        raise SegmentQLError(
            f"expected value, got {describe(tok)}", tok.line, tok.col, ("value",)
        )

    def _string(self, tok: Token) -> Literal:
        problem = datemath_problem(tok.text)
        if problem:
            raise SegmentQLError(problem, tok.line, tok.col, ("date math within 1000 years",))
        return Literal(tok.text)

    def _include(self) -> Include:
        tok = self.c.expect("IDENT", "segment id or slug after INCLUDE")
        return Include(tok.text)

    def _parenthesised(self) -> Expr:
        self.c.newline_modes.append(False)
        try:
            inner = self.expression()
            self.c.expect("RPAREN", "')'")
        finally:
            self.c.newline_modes.pop()
        return inner

    def _items(self, closer: str, closer_text: str) -> tuple[Expr, ...]:
        """Comma-separated expressions up to ``closer`` (a trailing comma is allowed)."""
        self.c.newline_modes.append(False)
        try:
            items: list[Expr] = []
            while self.c.peek().kind != closer:
                items.append(self.expression())
                if self.c.peek().kind == "COMMA":
                    self.c.next()
                elif self.c.peek().kind != closer:
                    raise self.c.error(f"',' or {closer_text}")
            self.c.next()
        finally:
            self.c.newline_modes.pop()
        if not items and closer == "RPAREN":
            raise self.c.error("at least one value in the list", self.c.last)
        return tuple(items)

    def _call(self, tok: Token) -> FuncCall:
        spec = FUNCTIONS.get(tok.text)
        if spec is None:
            raise SegmentQLError(
                f"non existent function {tok.text}", tok.line, tok.col, ("known function",)
            )
        self.c.expect("LPAREN", "'('")
        args = self._call_args(tok.text)
        if not spec.accepts(len(args)):
            raise SegmentQLError(
                f"function {tok.text} takes {spec.arity_text()}, got {len(args)}",
                tok.line, tok.col, (spec.arity_text(),),
            )
        return FuncCall(tok.text, args)

    def _call_args(self, name: str) -> tuple[Expr, ...]:
        if name != "cast":
            return self._items("RPAREN", "')'") if self.c.peek().kind != "RPAREN" else \
                self._empty_args()
        # CAST(x AS type) is sugar for cast(x, "type").
        self.c.newline_modes.append(False)
        try:
            value = self.expression()
            if self.c.is_kw("as"):
                self.c.next()
                target = self.c.expect("IDENT", "type name after AS")
                self.c.expect("RPAREN", "')'")
                return (value, Literal(target.text.lower()))
        finally:
            self.c.newline_modes.pop()
        if self.c.peek().kind == "COMMA":
            self.c.next()
            return (value, *self._items("RPAREN", "')'"))
        self.c.expect("RPAREN", "AS or ')'")
        return (value,)

    def _empty_args(self) -> tuple[Expr, ...]:
        self.c.next()
        return ()


def _starts_value(tok: Token) -> bool:
    if tok.kind in ("NUMBER", "STRING", "IDENT", "FUNC", "LPAREN", "LBRACKET"):
        return True
    if tok.kind == "OP":
        return tok.text in ("-", "*", "!")
    return tok.kind == "KEYWORD" and tok.text in ("null", "include", "not", "exists", "and", "or")


def _identifier(tok: Token) -> Expr:
    if not tok.quoted and len(tok.parts) == 1:
        word = tok.text.lower()
        if word in ("true", "false"):
            return Literal(word == "true")
        if word == "match_all":
            return MatchAll()
    return Ident(tok.parts)


def number_value(tok: Token) -> int | float:
    text = tok.text
    if len(text) > 40:
        raise SegmentQLError(f"number {text[:12]}... is too long", tok.line, tok.col)
    if text.lower().startswith("0x"):
        if len(text) == 2:
            raise SegmentQLError("hex number needs digits", tok.line, tok.col, ("hex digit",))
        return int(text, 16)
    if any(c in text for c in ".eE"):
        value = float(text)
        if value in (float("inf"), float("-inf")):
            raise SegmentQLError(f"number {text} is out of range", tok.line, tok.col)
        return value
    return int(text)
