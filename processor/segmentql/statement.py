"""Statement-level SegmentQL (spec §1.1): FILTER / SELECT forms and their clauses.

Clause order is fixed — FILTER, FROM, LIMIT, WITH, ALIAS — each at most once; a duplicated or
misplaced clause is an error (``FILTER * FROM user ALIAS ALIAS stuff`` fails). Leading comments
become the statement's description. A text may hold several statements separated by ``;``.
"""

from __future__ import annotations

import json
from typing import Any

from .ast import Expr, MatchAll, Statement, WithValue
from .cursor import TokenCursor, describe
from .errors import SegmentQLError
from .lexer import Token, tokenize
from .parser import ExpressionParser, number_value

_CLAUSES = ("from", "limit", "with", "alias")


class StatementParser:
    """Parses statements from one token list."""

    def __init__(self, text: str) -> None:
        self.c = TokenCursor(tokenize(text))
        self.exprs = ExpressionParser(self.c)

    def script(self) -> tuple[Statement, ...]:
        statements: list[Statement] = []
        while True:
            self._skip_blank()
            if self.c.peek().kind == "EOF":
                break
            statements.append(self.statement())
            if self.c.peek().kind == "SEMI":
                self.c.next()
            elif self.c.peek().kind != "EOF":
                raise self.c.error("';' or end of statement")
        if not statements:
            raise self.c.error("FILTER or SELECT")
        return tuple(statements)

    def _skip_blank(self) -> None:
        while self.c.peek().kind == "SEMI":
            self.c.next()

    def _description(self) -> str | None:
        lines: list[str] = []
        i = self.c.i
        tokens = self.c.tokens
        while tokens[i].kind in ("COMMENT", "NEWLINE"):
            if tokens[i].kind == "COMMENT" and tokens[i].text:
                lines.append(tokens[i].text)
            i += 1
        return "\n".join(lines) if lines else None

    def statement(self) -> Statement:
        description = self._description()
        tok = self.c.peek()
        if tok.kind == "KEYWORD" and tok.text == "filter":
            self.c.next()
            expr = self._filter_body()
            columns: tuple[Expr, ...] | None = None
            from_table = None
        elif tok.kind == "KEYWORD" and tok.text == "select":
            self.c.next()
            columns, from_table, expr = self._select()
        else:
            raise SegmentQLError(
                f"expected FILTER or SELECT, got {describe(tok)}", tok.line, tok.col,
                ("FILTER", "SELECT"),
            )
        clauses = self._clauses(skip_from=from_table is not None)
        return Statement(
            expr=expr,
            from_table=from_table if from_table is not None else clauses.get("from"),
            alias=clauses.get("alias"),
            with_props=clauses.get("with", ()),
            limit=clauses.get("limit"),
            columns=columns,
            description=description,
        )

    def _filter_body(self) -> Expr:
        tok = self.c.peek()
        if tok.kind in ("EOF", "SEMI") or (tok.kind == "KEYWORD" and tok.text in _CLAUSES):
            raise self.c.error("filter expression, '*' or match_all after FILTER")
        return self.exprs.expression()

    def _select(self) -> tuple[tuple[Expr, ...], str, Expr]:
        columns = [self.exprs.expression()]
        while self.c.peek().kind == "COMMA":
            self.c.next()
            columns.append(self.exprs.expression())
        if not self.c.is_kw("from"):
            raise self.c.error("FROM after SELECT columns")
        self.c.next()
        table = self._name("table name after FROM")
        if self.c.is_kw("where") or self.c.is_kw("filter"):
            self.c.next()
            expr = self._filter_body()
        else:
            expr = MatchAll()
        return tuple(columns), table, expr

    def _clauses(self, *, skip_from: bool) -> dict[str, Any]:
        found: dict[str, Any] = {}
        position = 1 if skip_from else 0
        while True:
            tok = self.c.peek()
            if tok.kind != "KEYWORD" or tok.text not in _CLAUSES:
                if tok.kind not in ("EOF", "SEMI"):
                    allowed = ", ".join(c.upper() for c in _CLAUSES[position:])
                    raise self.c.error(f"end of expression or one of {allowed or 'nothing'}")
                return found
            index = _CLAUSES.index(tok.text)
            if index < position:
                raise SegmentQLError(
                    f"unexpected {tok.text.upper()}: clauses go FILTER, FROM, LIMIT, WITH, ALIAS "
                    "and each appears once", tok.line, tok.col, _CLAUSES[position:],
                )
            self.c.next()
            found[tok.text] = self._clause(tok.text)
            position = index + 1

    def _clause(self, word: str) -> Any:
        if word == "from":
            return self._name("table name after FROM")
        if word == "alias":
            return self._name("alias name after ALIAS").lower()
        if word == "limit":
            tok = self.c.expect("NUMBER", "integer after LIMIT")
            if not tok.text.isdigit() or len(tok.text) > 18:
                raise SegmentQLError("LIMIT needs a non-negative integer", tok.line, tok.col)
            return int(tok.text)
        return self._with()

    def _name(self, what: str) -> str:
        tok = self.c.peek()
        if tok.kind != "IDENT":
            raise self.c.error(what)
        return self.c.next().text

    def _with(self) -> tuple[tuple[str, WithValue], ...]:
        tok = self.c.peek()
        if tok.kind == "JSON":
            self.c.next()
            return _json_props(tok)
        pairs = [self._key_value()]
        while self.c.peek().kind == "COMMA":
            self.c.next()
            pairs.append(self._key_value())
        return tuple(pairs)

    def _key_value(self) -> tuple[str, WithValue]:
        key = self._name("property name after WITH")
        if not self.c.is_op("="):
            raise self.c.error(f"'=' after WITH property {key}")
        self.c.next()
        tok = self.c.next()
        if tok.kind == "STRING":
            return key, tok.text
        if tok.kind == "NUMBER":
            return key, number_value(tok)
        if tok.kind == "OP" and tok.text == "-" and self.c.peek().kind == "NUMBER":
            return key, -number_value(self.c.next())
        if tok.kind == "IDENT" and not tok.quoted and tok.text.lower() in ("true", "false"):
            return key, tok.text.lower() == "true"
        if tok.kind == "KEYWORD" and tok.text == "null":
            return key, None
        raise SegmentQLError(
            f"expected literal value for WITH {key}, got {describe(tok)}", tok.line, tok.col,
            ("string", "number", "true", "false", "null"),
        )


def _json_props(tok: Token) -> tuple[tuple[str, WithValue], ...]:
    try:
        data = json.loads(tok.text)
    except (ValueError, RecursionError) as exc:
        raise SegmentQLError(f"invalid JSON after WITH: {exc}", tok.line, tok.col) from None
    if not isinstance(data, dict):
        raise SegmentQLError("WITH JSON must be an object", tok.line, tok.col)
    return tuple(data.items())


def parse_script(text: str) -> tuple[Statement, ...]:
    """All ``;``-separated statements of ``text``; raises :class:`SegmentQLError`."""
    return StatementParser(text).script()


def parse(text: str) -> Statement:
    """Exactly one statement (a trailing ``;`` is fine); raises :class:`SegmentQLError`."""
    parser = StatementParser(text)
    statements = parser.script()
    if len(statements) != 1:
        raise SegmentQLError("expected exactly one statement, got several", 1, 1, ("one",))
    return statements[0]
