"""Evaluator semantics (spec §1.4, quirks §1.7, scenario S1-S10 predicates)."""

from __future__ import annotations

from typing import Any

import pytest

from processor.segmentql import evaluate, parse

T0 = 1_767_312_000_000  # 2026-01-02T00:00:00Z
DAY = 86_400_000


def matches(text: str, profile: dict[str, Any], now_ms: int = T0, **kw: Any) -> bool:
    return evaluate(parse(text), profile, now_ms=now_ms, **kw)


def test_match_all() -> None:
    assert matches("FILTER *", {})
    assert matches("FILTER match_all", {"x": 1})


# -- missing fields (quirk 1) -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('FILTER country = "US"', False),
        ('FILTER country != "US"', True),
        ("FILTER country > 5", False),
        ("FILTER NOT country > 5", True),
        ('FILTER country NOT IN ("Yoda")', True),
        ('FILTER NOT country CONTAINS "a"', True),
        ('FILTER country LIKE "*"', False),
        ('FILTER country IN ("US")', False),
        ("FILTER country BETWEEN 1 AND 5", False),
        ("FILTER country NOT BETWEEN 1 AND 5", False),  # not-ok stays not-ok under NOT
        ("FILTER EXISTS country", False),
        ("FILTER NOT EXISTS country", True),
        ("FILTER country IS NULL", True),
        ("FILTER country IS NOT NULL", False),
        ("FILTER ne(country, 5)", False),
        ("FILTER eq(country, 5)", False),
    ],
)
def test_missing_field_semantics(text: str, expected: bool) -> None:
    assert matches(text, {"email": "a@b.c"}) is expected


def test_null_value_is_missing() -> None:
    assert matches('FILTER first_name != "Anakin"', {"first_name": None})
    assert not matches("FILTER EXISTS first_name", {"first_name": None})


def test_exists_counts_zero_and_empty_as_present() -> None:
    for value in ("", 0, False, [], {}):
        assert matches("FILTER EXISTS x", {"x": value}), value


# -- AND / OR not-ok propagation (quirk 2) -----------------------------------------------------
def test_and_with_not_ok_child_never_matches_even_negated() -> None:
    profile = {"a": 1, "s": "15"}
    assert not matches("FILTER AND ( a = 1, s BETWEEN 1 AND 20 )", profile)
    # short-circuit: a = 2 is false before the not-ok child is reached, so the AND is ok-false
    assert matches("FILTER NOT AND ( a = 2, s BETWEEN 1 AND 20 )", profile)
    assert not matches("FILTER NOT AND ( s BETWEEN 1 AND 20, a = 2 )", profile)


def test_or_skips_not_ok_children() -> None:
    profile = {"s": "15", "a": 1}
    assert matches("FILTER OR ( s BETWEEN 1 AND 20, a = 1 )", profile)
    assert not matches("FILTER OR ( s BETWEEN 1 AND 20, a = 2 )", profile)
    assert matches("FILTER NOT OR ( s BETWEEN 1 AND 20, a = 2 )", profile)


# -- equality and coercion -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "profile", "expected"),
    [
        ('FILTER zip == "5"', {"zip": 5}, True),
        ("FILTER zip = 5", {"zip": "5"}, True),
        ("FILTER zip = 5.0", {"zip": 5}, True),
        ('FILTER name = "yoda"', {"name": "Yoda"}, False),  # case-sensitive
        ('FILTER name != "yoda"', {"name": "Yoda"}, True),
        ('FILTER paying_user = "t"', {"paying_user": "t"}, True),
        ("FILTER paying_user = true", {"paying_user": "t"}, True),  # quirk 9
        ("FILTER paying_user = true", {"paying_user": "1"}, True),
        ("FILTER paying_user = false", {"paying_user": "f"}, True),
        ('FILTER paying_user = "t"', {"paying_user": True}, False),  # JSON bool vs "t"
        ('FILTER paying_user != "t"', {"paying_user": True}, False),  # ... is not-ok
        ("FILTER paying_user = true", {"paying_user": True}, True),
        ("FILTER paying_user", {"paying_user": True}, True),
        ("FILTER paying_user", {"paying_user": "t"}, False),  # only a real bool matches
        ('FILTER signedup == "12/18/2015"', {"signedup": "2015-12-18T00:00:00Z"}, True),
        ('FILTER signedup == "2015-12-18T00:00:00.400Z"',
         {"signedup": 1_450_396_800_000}, True),  # second resolution (quirk 8)
        ('FILTER `lastevent`.`signedup` == "12/18/2015"',
         {"lastevent": {"signedup": "2015-12-18"}}, True),
        ("FILTER user.city = \"Oslo\"", {"user": {"city": "Oslo"}}, True),
        ("FILTER user.city = \"Oslo\"", {"user.city": "Oslo", "user": {"city": "Rome"}}, True),
        ("FILTER app_yymm.`1602` > 5", {"app_yymm": {"1602": 6}}, True),
        ('FILTER tags = "b"', {"tags": ["a", "b"]}, True),
    ],
)
def test_equality_and_coercion(text: str, profile: dict[str, Any], expected: bool) -> None:
    assert matches(text, profile) is expected


@pytest.mark.parametrize(
    ("text", "profile", "expected"),
    [
        ('FILTER BankAmount > "50"', {"BankAmount": 55}, True),
        ("FILTER BankAmount > 50", {"BankAmount": "55.5"}, True),
        ("FILTER visits >= 10", {"visits": 10}, True),
        ("FILTER visits < 10", {"visits": 10}, False),
        ('FILTER name > "a"', {"name": "b"}, False),  # no string ordering
        ('FILTER NOT name > "a"', {"name": "b"}, False),  # ... and it is not-ok
        ("FILTER seen > \"2015-01-01\"", {"seen": [1_000, 1_700_000_000_000]}, True),
        ("FILTER seen < \"2015-01-01\"", {"seen": [1_700_000_000_000]}, False),
        ("FILTER flag > 1", {"flag": True}, False),
    ],
)
def test_ordering(text: str, profile: dict[str, Any], expected: bool) -> None:
    assert matches(text, profile) is expected


# -- BETWEEN (quirk 3) ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [(10, False), (10.5, True), (15, True), (19.99, True), (20, False), (25, False), ("15", False)],
)
def test_between_is_exclusive(value: Any, expected: bool) -> None:
    assert matches("FILTER score BETWEEN 10 AND 20", {"score": value}) is expected


def test_between_dates() -> None:
    created = {"Created": "2015-12-10T00:00:00Z"}
    assert matches('FILTER Created BETWEEN "12/01/2015" AND "01/01/2016"', created)
    assert not matches('FILTER Created NOT BETWEEN "12/01/2015" AND "01/01/2016"', created)
    renewal = {"renewal_date": "2026-01-05T00:00:00Z"}
    assert matches('FILTER renewal_date BETWEEN "now-1d" AND "now+7d"', renewal)
    assert not matches('FILTER renewal_date BETWEEN "now-1d" AND "now+2d"', renewal)


# -- IN / INTERSECTS / CONTAINS / LIKE -----------------------------------------------------
@pytest.mark.parametrize(
    ("text", "profile", "expected"),
    [
        ('FILTER roles IN ("user", "api")', {"roles": "api"}, True),
        ('FILTER roles IN ("user", "api")', {"roles": ["admin", "api"]}, True),
        ('FILTER roles IN ("user", "api")', {"roles": ["admin"]}, False),
        ('FILTER hits IN ("bar", "foo")', {"hits": {"foo": 3}}, True),  # map keys
        ("FILTER n IN (1, 2, 3)", {"n": "2"}, True),
        ("FILTER n IN allowed", {"n": 2, "allowed": [1, 2]}, True),
        ('FILTER COMPANY IN ("Toys R"" Us")', {"COMPANY": 'Toys R" Us'}, True),
        ('FILTER tags INTERSECTS ("vip", "beta")', {"tags": ["beta"]}, True),
        ('FILTER tags INTERSECTS ("vip", "beta")', {"tags": ["alpha"]}, False),
        ('FILTER tags INTERSECTS ["vip"]', {"tags": {"vip": 1}}, True),
        ('FILTER landing CONTAINS "/admin"', {"landing": "/admin/x"}, True),
        ('FILTER landing CONTAINS "/Admin"', {"landing": "/admin/x"}, False),
        ('FILTER urls CONTAINS "blog"', {"urls": ["x.com/blog/1", "y"]}, True),
        ("FILTER nums CONTAINS 3", {"nums": [1, 3]}, True),
        ("FILTER nums CONTAINS 3", {"nums": [1, 33]}, False),
        ('FILTER email LIKE "*@example.com"', {"email": "a@example.com"}, True),
        ('FILTER email LIKE "*@example.com"', {"email": "A@EXAMPLE.COM"}, False),
        ('FILTER email LIKE "%@example.com"', {"email": "a@example.com"}, True),
        ('FILTER url LIKE "*blog*"', {"url": "www.x.com/blog/post"}, False),  # quirk 4
        ('FILTER url LIKE "**blog**"', {"url": "www.x.com/blog/post"}, True),
        ('FILTER code LIKE "a?c"', {"code": "abc"}, True),
        ('FILTER code LIKE "[a-c]x"', {"code": "bx"}, True),
        ('FILTER code LIKE "[^a-c]x"', {"code": "bx"}, False),
        ('FILTER codes LIKE "a*"', {"codes": ["zz", "ab"]}, True),
        ('FILTER code LIKE "a.c"', {"code": "abc"}, False),  # regex chars are literal
    ],
)
def test_collection_and_text_operators(
    text: str, profile: dict[str, Any], expected: bool
) -> None:
    assert matches(text, profile) is expected


# -- arithmetic ------------------------------------------------------------------------------
def test_arithmetic() -> None:
    assert matches("FILTER a + b * 2 = 7", {"a": 1, "b": 3})
    assert matches("FILTER a / 2 = 3", {"a": 7})  # integer division stays integer
    assert matches("FILTER a % 4 = -3", {"a": -7})  # Go remainder keeps the dividend's sign
    assert matches("FILTER a / 2 = 3.5", {"a": 7.0})
    assert not matches("FILTER a / 0 = 1", {"a": 1})
    assert not matches("FILTER NOT a / 0 = 1", {"a": 1})  # divide by zero is not-ok
    assert matches("FILTER -(a) = -1", {"a": 1})


# -- date math -------------------------------------------------------------------------------
def test_date_math_relative_to_now() -> None:
    profile = {"last_active_ts": "2026-01-01T00:00:00Z"}
    assert matches('FILTER last_active_ts > "now-30d"', profile)
    assert not matches('FILTER last_active_ts > "now-30d"', profile, now_ms=T0 + 29 * DAY)
    assert matches('FILTER last_active_ts > "now-30d"', profile, now_ms=T0 + 29 * DAY - 1)
    assert matches('FILTER last_active_ts > "now-30d"', {"last_active_ts": T0 - DAY})
    assert matches('FILTER Created < "now-1d"', {"Created": "2015-01-01"})
    assert matches('FILTER NOT ( FakeDate > "now-1d")', {})


def test_date_math_units_are_case_sensitive() -> None:
    three_minutes_ago = {"t": T0 - 2 * 60_000}
    assert matches('FILTER t > "now-3m"', three_minutes_ago)
    two_months_ago = {"t": T0 - 40 * DAY}
    assert matches('FILTER t > "now-2M"', two_months_ago)
    assert not matches('FILTER t > "now-2m"', two_months_ago)
    assert matches('FILTER t > "now-1y"', {"t": T0 - 300 * DAY})
    assert matches('FILTER t < "now+1w"', {"t": T0 + 6 * DAY})
    assert matches('FILTER t < "now+2h"', {"t": T0 + 3_600_000})
    assert matches('FILTER t > "now-10s"', {"t": T0 - 9_000})


def test_now_function_and_todate() -> None:
    assert matches("FILTER t < now()", {"t": T0 - 1_000})
    assert matches('FILTER todate(t) > todate("now-3d")', {"t": "2026-01-01"})
    assert matches('FILTER t > todate("2025-12-31")', {"t": T0})


def test_huge_values_never_crash() -> None:
    profile = {"t": 10**30, "s": "9" * 5000, "f": float("inf"), "n": float("nan")}
    for text in ('FILTER t > "now-1d"', 'FILTER s > "now-1d"', "FILTER f > 1", "FILTER n = 1",
                 "FILTER t BETWEEN \"now-1d\" AND \"now+1d\"", "FILTER t * t > 1"):
        assert evaluate(parse(text), profile, now_ms=T0) in (True, False)


# -- INCLUDE ---------------------------------------------------------------------------------
def test_include_resolution() -> None:
    members = {"pro_users": True, "free": False, "broken": None}

    def resolve(name: str) -> bool | None:
        if name not in members:
            raise LookupError(name)
        return members[name]

    def check(text: str) -> bool:
        return matches(text, {"visits": 6}, resolve_include=resolve)

    assert check("FILTER AND ( INCLUDE pro_users, visits > 5 )")
    assert not check("FILTER INCLUDE free")
    assert check("FILTER NOT INCLUDE free")
    assert not check("FILTER INCLUDE broken")
    assert check("FILTER NOT INCLUDE broken")  # resolved but not-ok: NOT is true
    assert not check("FILTER INCLUDE missing")
    assert not check("FILTER NOT INCLUDE missing")  # unresolvable: not-ok both ways
    assert not matches("FILTER NOT INCLUDE x", {})  # no resolver at all


# -- scenario predicates -------------------------------------------------------------------
def test_scenario_s3_missing_field_segments() -> None:
    non_us, us_only = parse('FILTER country != "US"'), parse('FILTER country = "US"')
    for profile, expected in [({}, (True, False)), ({"country": "US"}, (False, True)),
                              ({"country": "us"}, (True, False))]:
        got = (evaluate(non_us, profile, now_ms=T0), evaluate(us_only, profile, now_ms=T0))
        assert got == expected


def test_scenario_s10_operator_mix() -> None:
    stmt = parse(
        'FILTER AND (\n  email LIKE "*@example.com"\n  tags INTERSECTS ("vip", "beta")\n'
        '  score BETWEEN 10 AND 20,\n  NOT landing CONTAINS "/admin"\n) ALIAS ops_mix'
    )
    profile: dict[str, Any] = {"email": "a@example.com", "tags": ["beta"], "score": 10,
                               "landing": "/home"}
    steps = [({}, False), ({"score": 15}, True), ({"landing": "/admin/x"}, False),
             ({"landing": "/home", "email": "A@EXAMPLE.COM"}, False),
             ({"email": "a@example.com"}, True)]
    for update, expected in steps:
        profile.update(update)
        assert evaluate(stmt, profile, now_ms=T0) is expected, update


def test_date_literal_forms() -> None:
    t = {"t": "2015-04-01T12:00:00Z"}
    assert matches('FILTER t > "2015-04-01 00:00:00Z"', t)
    assert matches('FILTER t > "03/31/2015"', t)
    assert matches('FILTER t > "1427846400"', t)  # epoch seconds
    assert matches('FILTER t < "1427932800000"', t)  # epoch milliseconds
    assert not matches('FILTER t > "now"', t)  # bare "now" is not date math (use now())
    assert not matches('FILTER NOT t > "now"', t)
