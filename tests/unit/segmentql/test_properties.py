"""Property tests: random trees print and parse back equal; random text only ever raises
SegmentQLError; evaluation and boundaries never raise on arbitrary profiles."""

from __future__ import annotations

import string
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.segmentql import (
    SegmentQLError,
    Statement,
    evaluate,
    next_boundary,
    parse,
    print_statement,
    to_ast_json,
)
from processor.segmentql.ast import (
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
from processor.segmentql.datemath import datemath_problem
from processor.segmentql.functions import FUNCTIONS

T0 = 1_767_312_000_000

_name_chars = st.sampled_from(string.ascii_letters + string.digits + "_.-/@ `'\"[]()#é\n")
names = st.text(_name_chars, min_size=1, max_size=8)
plain_names = st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True)

strings = st.text(max_size=12).filter(lambda s: datemath_problem(s) is None) | st.sampled_from(
    ["now-7d", "now+3M", "2026-01-01T00:00:00Z", "12/18/2015", "*@x.com", "t", ""]
)
numbers = st.integers(-(10**15), 10**15) | st.floats(allow_nan=False, allow_infinity=False)
literals = st.builds(Literal, strings | numbers | st.booleans() | st.none())
idents = st.builds(Ident, st.lists(names, min_size=1, max_size=3).map(tuple))
leaves = st.one_of(literals, idents, st.just(MatchAll()), st.builds(Include, names))

_CMP = ["=", "==", "!=", ">", ">=", "<", "<=", "like", "contains", "+", "-", "*", "/", "%"]
_FUNCS = sorted(FUNCTIONS)


def _call(draw: Any, children: st.SearchStrategy[Expr]) -> FuncCall:
    name = draw(st.sampled_from(_FUNCS))
    spec = FUNCTIONS[name]
    upper = spec.min_args + 2 if spec.max_args is None else spec.max_args
    count = draw(st.integers(spec.min_args, upper))
    return FuncCall(name, tuple(draw(children) for _ in range(count)))


def _extend(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    tuples = st.lists(children, min_size=1, max_size=3).map(tuple)
    in_operands = st.one_of(
        st.builds(ListExpr, tuples), idents, st.builds(Literal, strings)
    )
    return st.one_of(
        st.builds(Binary, st.sampled_from(_CMP), children, children),
        st.builds(Binary, st.just("in"), children, in_operands),
        st.builds(Binary, st.just("intersects"), children,
                  st.one_of(st.builds(ListExpr, tuples), idents)),
        st.builds(Between, children, children, children),
        st.builds(Not, children),
        st.builds(Negate, children),
        st.builds(Exists, children),
        st.builds(ListExpr, st.lists(children, max_size=3).map(tuple)),
        st.builds(Logical, st.sampled_from(["and", "or"]),
                  st.lists(children, min_size=2, max_size=4).map(tuple)),
        st.composite(lambda draw: _call(draw, children))(),
    )


expressions = st.recursive(leaves, _extend, max_leaves=12)

with_values = st.one_of(st.text(max_size=8), st.integers(-1000, 1000), st.booleans(), st.none())
descriptions = st.lists(
    st.text(st.sampled_from(string.ascii_letters + string.digits + " -*/#"), min_size=1,
            max_size=10).map(str.strip).filter(bool),
    max_size=2,
).map(lambda lines: "\n".join(lines) or None)

statements = st.builds(
    Statement,
    expr=expressions,
    from_table=st.none() | names,
    alias=st.none() | names.map(str.lower),
    with_props=st.lists(st.tuples(plain_names, with_values), max_size=3, unique_by=lambda kv: kv[0])
    .map(tuple),
    limit=st.none() | st.integers(0, 10**6),
    columns=st.none(),
    description=descriptions,
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(statements)
def test_print_then_parse_round_trips(stmt: Statement) -> None:
    text = print_statement(stmt)
    assert parse(text) == stmt, text


@settings(max_examples=200, deadline=None)
@given(expressions, st.lists(expressions, min_size=1, max_size=3), names)
def test_select_form_round_trips(expr: Expr, columns: list[Expr], table: str) -> None:
    stmt = Statement(expr=expr, from_table=table, columns=tuple(columns))
    assert parse(print_statement(stmt)) == stmt


_FRAGMENTS = st.sampled_from([
    "FILTER ", "SELECT ", " FROM ", " WHERE ", " AND ", " OR ", " NOT ", " IN ", " INTERSECTS ",
    " LIKE ", " CONTAINS ", " BETWEEN ", " INCLUDE ", " EXISTS ", " IS ", " NULL ", " WITH ",
    " ALIAS ", " LIMIT ", "(", ")", "[", "]", ",", ";", "\n", "-- c\n", "/*", "*/", "=", "==",
    "!=", "<>", ">", ">=", "<", "<=", "+", "-", "*", "/", "%", "!", "&&", "||", '"now-7d"',
    '"a""b"', '"\\"', "`q`", "'q'", ".", "x", "a.b", "5", "5d", "0x", "1e5", "1.5", "{", "}",
    '{"a": 1}', "len(", "not(", "now()", "true", "match_all", "  ", "é", "²", "#", "\\",
])
texts = (
    st.lists(_FRAGMENTS, max_size=25).map("".join)
    | st.lists(_FRAGMENTS, max_size=12).map(lambda parts: "FILTER x " + "".join(parts))
    | st.text(max_size=40)
)

_profile_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                 max_size=3),
    max_leaves=6,
)
profiles = st.dictionaries(st.sampled_from(["x", "a", "a.b", "q", "t", "tags"]),
                           _profile_values, max_size=5)


@settings(max_examples=1500, deadline=None)
@given(texts)
def test_random_text_only_raises_segmentql_error(text: str) -> None:
    try:
        stmt = parse(text)
    except SegmentQLError as err:
        assert err.line >= 1 and err.column >= 1
        return
    # whatever parses must print canonically and survive evaluation
    assert parse(print_statement(stmt)) == stmt
    assert isinstance(to_ast_json(stmt), dict)
    assert evaluate(stmt, {"x": 1, "a": {"b": "2"}}, now_ms=T0) in (True, False)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions, profiles, st.integers(-(10**13), 10**14))
def test_evaluate_and_boundary_never_raise(expr: Expr, profile: dict[str, Any], now: int) -> None:
    def resolve(name: str) -> bool | None:
        if len(name) % 3 == 0:
            raise LookupError(name)
        return None if len(name) % 3 == 1 else True

    result = evaluate(expr, profile, now_ms=now, resolve_include=resolve)
    assert result in (True, False)
    boundary = next_boundary(expr, profile, now_ms=now)
    assert boundary is None or boundary > now
