"""Parser conformance: every statement spec §1 / §6 says parses or fails, and error shape."""

from __future__ import annotations

import pytest

from processor.segmentql import (
    SegmentQLError,
    included_segments,
    parse,
    parse_script,
    print_statement,
    referenced_fields,
    to_ast_json,
)
from processor.segmentql.ast import (
    Between,
    Binary,
    Exists,
    FuncCall,
    Ident,
    Include,
    ListExpr,
    Literal,
    Logical,
    MatchAll,
    Not,
)

S10 = """FILTER AND (
  email LIKE "*@example.com"          -- glob, case-sensitive
  tags INTERSECTS ("vip", "beta")     -- newline-separated group, comments allowed
  score BETWEEN 10 AND 20,            -- exclusive; trailing comma ok
  NOT landing CONTAINS "/admin"
) ALIAS ops_mix"""

ACCEPT = [
    "FILTER *",
    "FILTER match_all",
    "filter and (x > 7) from user alias A",
    "FILTER NOT INCLUDE '791734b084019d99c82a475264464304'",
    'FILTER `lastevent`.`signedup` == "12/18/2015"',
    'FILTER COMPANY IN ("Toys R"" Us", "Toys R\' Us, Inc.")',
    'FILTER AND ( score NOT BETWEEN 5 and 10, email NOT IN ("abc") )',
    "-- a comment\nFILTER AND (\n  x > 1 -- why\n  y < 2\n)\nLIMIT 100",
    'FILTER score > 0 WITH name = "My Little Pony", public = false, kind = "aspect" '
    "ALIAS with_attributes",
    'FILTER AND ( paying_user = "t" ) FROM user ALIAS demo_segment',
    "FILTER AND ( channelsct > 1 AND scores.quantity > 20 )",
    "FILTER INCLUDE 3d4240482815b9848caf2e6f",
    "FILTER INCLUDE child_segment_1",
    'FILTER domain(email) == "gmail.com"',
    "FILTER last_active_ts > \"now-30d\" ALIAS active_30d",
    'FILTER renewal_date BETWEEN "now-1d" AND "now+7d"',
    "FILTER AND ( INCLUDE pro_users, visits > 5 ) ALIAS engaged_pro",
    "FILTER AND ( EXISTS email, plan = \"pro\" ) ALIAS pro_email",
    'FILTER Created < "now-1d"',
    'FILTER NOT ( FakeDate > "now-1d")',
    'FILTER not_a_field NOT IN ("Yoda")',
    'FILTER AND (zip == "5", BankAmount > "50")',
    'FILTER hits IN ("bar","foo")',
    'FILTER Created BETWEEN "12/01/2015" AND "01/01/2016"',
    "FILTER app_yymm.`1602` > 5",
    "FILTER `actioncounts.Web hit` > 1",
    "FILTER `last.event`.`has.period` = 1",
    "FILTER first-name = \"a\" AND a/b = 2",
    S10,
    "SELECT * FROM user WHERE x = 1 LIMIT 5",
    "FILTER x = 1;",
    "# hash comment\nFILTER x = 1 // slash comment",
    "/* block */ FILTER x = 1",
    'FILTER x IS NOT NULL',
    "FILTER CAST(x AS int) > 5",
    'FILTER x = 1 WITH {"name": "x", "nested": {"a": [1, 2]}}',
    "FILTER x = -5 AND y = 0x1A AND z > 6.02e23 AND w < .5",
    "FILTER OR ( a = 1 || b = 2, c = 3 && d = 4 )",
    "FILTER NOT OR ( a = 1, b = 2 )",
    "FILTER exists(email) AND not(x) AND contains(name, \"a\")",
    "FILTER tags INTERSECTS [\"a\", \"b\"]",
    "FILTER [first name] = \"Ann\"",
    "FILTER x <> 3",
    "FILTER a + b * 2 - c % 3 / 1 > 4",
]


@pytest.mark.parametrize("text", ACCEPT)
def test_spec_examples_parse_and_round_trip(text: str) -> None:
    stmt = parse(text)
    printed = print_statement(stmt)
    assert parse(printed) == stmt, printed


REJECT = [
    ("FILTER * FROM user ALIAS ALIAS stuff", 1, 26),
    ('FILTER OR (_uid == "bob", email IN ("steve@steve.com")))', 1, 56),
    ("x = 1", 1, 1),
    ("UPDATE user SET x = 1", 1, 1),
    ("FILTER (x = 1", 1, 14),
    ("FILTER x = )", 1, 12),
    ("FILTER x > 5d", 1, 13),
    ('FILTER x > "now-99999y"', 1, 12),
    ("FILTER nosuchfn(x)", 1, 8),
    ('FILTER "abc', 1, 8),
    ("FILTER len()", 1, 8),
    ("FILTER", 1, 7),
    ("FILTER x = 1 FROM", 1, 18),
    ("FILTER x = 1 ALIAS a FROM user", 1, 22),
    ("FILTER x = 1 LIMIT -3", 1, 20),
    ("FILTER AND ( a = 1 b = 2 )", 1, 20),
    ("FILTER x IN ()", 1, 14),
    ("FILTER x BETWEEN 1 OR 2", 1, 20),
    ("FILTER x = 1; FILTER y = 2", 1, 1),
    ("FILTER x = `unterminated", 1, 12),
    ("FILTER x = 1 WITH {bad json}", 1, 19),
    ("FILTER x = 1 WITH name", 1, 23),
    ("FILTER INCLUDE", 1, 15),
    ("FILTER x ~ 1", 1, 10),
    ("FILTER x = 1e999", 1, 12),
]


@pytest.mark.parametrize(("text", "line", "column"), REJECT)
def test_invalid_statements_raise_positioned_errors(text: str, line: int, column: int) -> None:
    with pytest.raises(SegmentQLError) as info:
        parse(text)
    assert (info.value.line, info.value.column) == (line, column), str(info.value)
    assert str(info.value).startswith(f"line {line}, column {column}: ")


def test_error_message_names_what_was_expected() -> None:
    with pytest.raises(SegmentQLError) as info:
        parse("FILTER AND (\n  a = 1,\n  b = )\n)")
    err = info.value
    assert str(err) == "line 3, column 7: expected value after '=', got ')'"
    assert err.expected == ("value after '='",)
    assert err.message == "expected value after '=', got ')'"


def test_duplicate_clause_error_explains_order() -> None:
    with pytest.raises(SegmentQLError, match="expected alias name"):
        parse("FILTER * FROM user ALIAS ALIAS stuff")
    with pytest.raises(SegmentQLError, match="clauses go FILTER, FROM, LIMIT, WITH, ALIAS"):
        parse("FILTER * ALIAS a LIMIT 5")


def test_statement_clauses() -> None:
    stmt = parse(
        "-- recent readers\nFILTER x > 7 FROM content LIMIT 10 "
        'WITH name = "Blog", public = false, weight = 1.5 ALIAS MixedCase'
    )
    assert stmt.from_table == "content"
    assert stmt.alias == "mixedcase"  # ALIAS is lower-cased, FROM is not (quirk 10)
    assert stmt.limit == 10
    assert stmt.with_dict == {"name": "Blog", "public": False, "weight": 1.5}
    assert stmt.description == "recent readers"
    assert stmt.expr == Binary(">", Ident(("x",)), Literal(7))
    assert parse("FILTER FOO = 1 FROM User").from_table == "User"
    assert parse("FILTER * ").from_table is None


def test_select_form() -> None:
    stmt = parse("SELECT a, b FROM user WHERE x = 1 ALIAS s")
    assert stmt.columns == (Ident(("a",)), Ident(("b",)))
    assert stmt.from_table == "user"
    assert stmt.expr == Binary("=", Ident(("x",)), Literal(1))
    assert parse(print_statement(stmt)) == stmt


def test_script_of_several_statements() -> None:
    stmts = parse_script("FILTER a = 1 ALIAS one; FILTER b = 2 ALIAS two;")
    assert [s.alias for s in stmts] == ["one", "two"]


def test_keywords_are_case_insensitive() -> None:
    assert parse("filter A = 1 and B = 2") == parse("FILTER A = 1 AND B = 2")
    assert parse("Filter a IN (1)") == parse("FILTER a in (1)")


def test_group_shapes() -> None:
    stmt = parse(S10)
    assert isinstance(stmt.expr, Logical) and stmt.expr.op == "and"
    first, second, third, fourth = stmt.expr.args
    assert first == Binary("like", Ident(("email",)), Literal("*@example.com"))
    assert second == Binary(
        "intersects", Ident(("tags",)), ListExpr((Literal("vip"), Literal("beta")))
    )
    assert third == Between(Ident(("score",)), Literal(10), Literal(20))
    assert fourth == Not(Binary("contains", Ident(("landing",)), Literal("/admin")))
    # a one-child group collapses to the child
    assert parse("FILTER AND ( x > 7 )").expr == Binary(">", Ident(("x",)), Literal(7))


def test_newline_inside_group_continues_when_operator_follows() -> None:
    stmt = parse("FILTER AND (\n  a = 1\n  OR b = 2\n  c = 3\n)")
    assert stmt.expr == Logical("and", (
        Logical("or", (Binary("=", Ident(("a",)), Literal(1)),
                       Binary("=", Ident(("b",)), Literal(2)))),
        Binary("=", Ident(("c",)), Literal(3)),
    ))
    nested = parse("FILTER OR (\n  a = 1\n  AND ( b = 2, c = 3 )\n)")
    assert isinstance(nested.expr, Logical) and len(nested.expr.args) == 2


def test_not_placements_are_equivalent() -> None:
    assert parse("FILTER NOT x IN (1, 2)") == parse("FILTER x NOT IN (1, 2)")
    assert parse("FILTER !(x LIKE \"a*\")") == parse("FILTER x NOT LIKE \"a*\"")
    assert parse("FILTER NOT x BETWEEN 1 AND 3").expr == Not(
        Between(Ident(("x",)), Literal(1), Literal(3))
    )


def test_glued_paren_makes_function_calls() -> None:
    assert parse("FILTER not(x)").expr == FuncCall("not", (Ident(("x",)),))
    assert parse("FILTER NOT (x)").expr == Not(Ident(("x",)))
    assert parse("FILTER exists(x)").expr == FuncCall("exists", (Ident(("x",)),))
    assert parse("FILTER EXISTS x").expr == Exists(Ident(("x",)))


def test_literals_and_identifiers() -> None:
    assert parse('FILTER x = "a\\"b""c\\\\d"').expr.right == Literal('a"b"c\\d')  # type: ignore[union-attr]
    assert parse("FILTER x = true").expr.right == Literal(True)  # type: ignore[union-attr]
    assert parse("FILTER x = `true`").expr.right == Ident(("true",))  # type: ignore[union-attr]
    assert parse("FILTER x = t").expr.right == Ident(("t",))  # type: ignore[union-attr]
    assert parse("FILTER x = 'quoted id'").expr.right == Ident(("quoted id",))  # type: ignore[union-attr]
    assert parse("FILTER * ").expr == MatchAll()
    assert parse("FILTER first-name = 1").expr.left == Ident(("first-name",))  # type: ignore[union-attr]


def test_referenced_fields_and_includes() -> None:
    stmt = parse(
        "FILTER AND ( INCLUDE pro_users, NOT INCLUDE '791734b0', visits > 5, "
        "domain(email) = \"x.com\", user.city = \"Oslo\", `a.b`.`c` = 1 )"
    )
    assert referenced_fields(stmt) == frozenset(
        {"visits", "email", "user.city", "user", "a.b", "a"}
    )
    assert included_segments(stmt) == frozenset({"pro_users", "791734b0"})
    assert referenced_fields(parse("FILTER *")) == frozenset()


def test_ast_json_shape() -> None:
    stmt = parse('FILTER AND ( x NOT IN ("a"), len(tags) > 2, INCLUDE seg, y = true )')
    assert to_ast_json(stmt) == {
        "op": "and",
        "args": [
            {"op": "not", "args": [
                {"op": "in", "args": [{"ident": "x"}, {"op": "array", "args": [{"val": "a"}]}]},
            ]},
            {"op": ">", "args": [
                {"op": "expr", "args": [{"ident": "len"}, {"ident": "tags"}]}, {"val": "2"},
            ]},
            {"op": "include", "args": [{"ident": "seg"}]},
            {"op": "=", "args": [{"ident": "y"}, {"val": "true"}]},
        ],
    }
    assert to_ast_json(parse("FILTER *")) == {"ident": "*"}


def test_include_targets() -> None:
    assert parse("FILTER INCLUDE 3d4240482815b9848caf2e6f").expr == Include(
        "3d4240482815b9848caf2e6f"
    )
    assert parse("FILTER NOT INCLUDE 'abc def'").expr == Not(Include("abc def"))


def test_deep_nesting_is_refused_not_crashing() -> None:
    for text in ("FILTER " + "(" * 5000 + "x", "FILTER " + "NOT " * 5000 + "x",
                 "FILTER " + "AND ( x, " * 3000, "FILTER x = " + "- " * 3000 + "1"):
        with pytest.raises(SegmentQLError, match="nested more than"):
            parse(text)
    assert parse("FILTER " + "(" * 40 + "x = 1" + ")" * 40).expr == Binary(
        "=", Ident(("x",)), Literal(1)
    )


def test_comment_markers_end_bare_identifiers() -> None:
    assert parse("FILTER a--b\n= 1").expr == Binary("=", Ident(("a",)), Literal(1))
    assert parse("FILTER a-b = 1").expr == Binary("=", Ident(("a-b",)), Literal(1))
    assert parse("FILTER a - b = 1").expr == Binary(
        "=", Binary("-", Ident(("a",)), Ident(("b",))), Literal(1)
    )
