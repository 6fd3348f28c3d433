"""Token cursor for the SegmentQL parser: lookahead that skips comments, and newlines unless
the innermost ``AND ( ... )`` group makes them separators."""

from __future__ import annotations

from collections.abc import Callable

from .errors import SegmentQLError
from .lexer import Token

#: Tokens that can only continue an expression, never start one: after a newline inside a
#: group they continue the current child instead of starting the next.
_CONTINUATION_KEYWORDS = frozenset({"in", "intersects", "like", "contains", "between", "is"})
_CONTINUATION_OPS = frozenset({"=", "==", "!=", ">", ">=", "<", "<=", "+", "/", "%", "&&", "||"})


def describe(tok: Token) -> str:
    if tok.kind == "EOF":
        return "end of input"
    if tok.kind == "NEWLINE":
        return "end of line"
    if tok.kind == "STRING":
        return f'"{tok.text}"'
    return f"'{tok.text}'"


class TokenCursor:
    """Position in the token list; skips comments, and newlines unless a group needs them."""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.i = 0
        self.newline_modes: list[bool] = [False]
        self.last: Token | None = None

    def _significant(self, i: int, newlines: bool) -> int:
        while True:
            kind = self.tokens[i].kind
            if kind == "COMMENT" or (kind == "NEWLINE" and not newlines):
                i += 1
                continue
            return i

    def peek(self, k: int = 0) -> Token:
        i = self._significant(self.i, self.newline_modes[-1])
        for _ in range(k):
            if self.tokens[i].kind == "EOF":
                break
            i = self._significant(i + 1, self.newline_modes[-1])
        return self.tokens[i]

    def next(self) -> Token:
        self.i = self._significant(self.i, self.newline_modes[-1])
        tok = self.tokens[self.i]
        if tok.kind != "EOF":
            self.i += 1
        self.last = tok
        return tok

    def skip_newlines_if(self, wanted: Callable[[Token, Token], bool]) -> None:
        """In newline mode, step over newlines when the tokens after them satisfy ``wanted``."""
        if not self.newline_modes[-1] or self.peek().kind != "NEWLINE":
            return
        j = self._significant(self.i, True)
        while self.tokens[j].kind == "NEWLINE":
            j = self._significant(j + 1, True)
        after = self._significant(j + 1, False) if self.tokens[j].kind != "EOF" else j
        if wanted(self.tokens[j], self.tokens[after]):
            self.i = j

    def is_kw(self, word: str, k: int = 0) -> bool:
        tok = self.peek(k)
        return tok.kind == "KEYWORD" and tok.text == word

    def is_op(self, *ops: str) -> bool:
        tok = self.peek()
        return tok.kind == "OP" and tok.text in ops

    def error(self, expected: str, tok: Token | None = None) -> SegmentQLError:
        tok = tok or self.peek()
        message = f"expected {expected}, got {describe(tok)}"
        return SegmentQLError(message, tok.line, tok.col, (expected,))

    def expect(self, kind: str, what: str) -> Token:
        if self.peek().kind != kind:
            raise self.error(what)
        return self.next()


def continues_expression(tok: Token, after: Token) -> bool:
    if tok.kind == "KEYWORD" and tok.text in ("and", "or"):
        # "AND (" on a fresh line inside a group starts the next child (spec §1.2).
        return after.kind != "LPAREN"
    if tok.kind == "KEYWORD":
        return tok.text in _CONTINUATION_KEYWORDS
    return tok.kind == "OP" and tok.text in _CONTINUATION_OPS
