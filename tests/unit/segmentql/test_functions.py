"""Builtin functions (spec §1.5) as used inside filters."""

from __future__ import annotations

from typing import Any

import pytest

from processor.segmentql import SegmentQLError, evaluate, parse
from processor.segmentql.functions import FUNCTIONS

T0 = 1_767_312_000_000  # 2026-01-02T00:00:00Z, a Friday

PROFILE: dict[str, Any] = {
    "email": "Ann.Lee@Gmail.com",
    "url": "https://www.example.com/blog/post?utm_source=news&x=1",
    "name": "  ada lovelace ",
    "tags": ["a", "b", "c"],
    "scores": {"math": 3, "art": 5},
    "amount": "$5,555",
    "flag": "t",
    "zero": 0,
    "ip": "10.1.2.3",
    "geo": "59.91,10.75",
    "ts": "2025-12-31T13:45:00Z",
}


@pytest.mark.parametrize(
    "text",
    [
        'FILTER domain(email) == "gmail.com"',
        'FILTER emaildomain(email) = "gmail.com"',
        'FILTER emailname(email) = "ann.lee"',
        'FILTER email(email) = "ann.lee@gmail.com"',
        'FILTER host(url) = "www.example.com"',
        'FILTER domain(url) = "example.com"',
        'FILTER path(url) = "/blog/post"',
        'FILTER qs(url, "utm_source") = "news"',
        'FILTER urlminusqs(url) = "https://www.example.com/blog/post"',
        'FILTER urlmain(url) = "www.example.com/blog/post"',
        'FILTER urldecode("a%20b") = "a b"',
        'FILTER contains(email, "Gmail")',
        'FILTER contains(tags, "b")',
        'FILTER hasprefix(url, "https://")',
        'FILTER hassuffix(email, ".com")',
        'FILTER tolower(email) = "ann.lee@gmail.com"',
        'FILTER string.uppercase("ab") = "AB"',
        'FILTER string.titlecase(strip(name)) = "Ada Lovelace"',
        'FILTER replace(email, "Gmail", "x") = "Ann.Lee@x.com"',
        'FILTER len(split("a,b,c", ",")) = 3',
        'FILTER join(tags, "-") = "a-b-c"',
        'FILTER string.substr("abcdef", 1, 3) = "bc"',
        'FILTER string.index("abcdef", "cd") = 2',
        "FILTER len(tags) = 3",
        "FILTER char_length(email) = 17",
        "FILTER toint(amount) = 5555",
        'FILTER toint("$5") = 5',
        'FILTER tonumber("1.5") > 1.4',
        'FILTER tostring(zero) = "0"',
        "FILTER tobool(flag)",
        'FILTER CAST(amount AS int) = 5555',
        "FILTER eq(zero, 0) AND ne(zero, 1) AND gt(3, 2) AND ge(2, 2) AND lt(1, 2) AND le(2, 2)",
        "FILTER not(zero)",
        "FILTER any(zero, flag)",
        "FILTER NOT all(zero, flag)",
        'FILTER oneof(missing, zero, "x") = "x"',
        "FILTER exists(zero) AND NOT exists(missing)",
        "FILTER sum(1, 2, 3) = 6 AND avg(2, 4) = 3 AND count(tags) = 3",
        "FILTER sqrt(16) = 4 AND pow(2, 10) = 1024 AND unsign(-3) = 3",
        'FILTER mapkeys(scores) INTERSECTS ("art")',
        "FILTER mapvalues(scores) IN (5)",
        'FILTER array.index(tags, 1) = "b"',
        'FILTER array.slice(tags, 1) INTERSECTS ("c")',
        'FILTER ipfilter(ip, "10.0.0.0/8")',
        'FILTER NOT ipfilter(ip, "192.168.0.0/16")',
        'FILTER geodistance(geo, "59.95,10.75", 10)',
        'FILTER NOT geodistance(geo, "40.71,-74.0", 100)',
        'FILTER hash.md5("a") = "0cc175b9c0f1b6a831c399e269772661"',
        'FILTER encoding.b64decode(encoding.b64encode("hi")) = "hi"',
        "FILTER now() > ts",
        'FILTER todate(ts) < todate("now-1h")',
        'FILTER todate("2006-01-02", "2025-12-31") < ts',
        "FILTER yy(ts) = 25 AND mm(ts) = 12 AND monthofyear(ts) = 12",
        'FILTER yymm(ts) = "2512"',
        "FILTER hourofday(ts) = 13 AND dayofweek(ts) = 3 AND hourofweek(ts) = 85",
        "FILTER dayofweek() = 5",  # no argument: the evaluation clock
        "FILTER totimestamp(ts) = 1767188700",
        'FILTER strftime(ts, "%Y/%m") = "2025/12"',
        'FILTER todatein("2025-12-31 08:45:00", "America/New_York") = todate(ts)',
    ],
)
def test_builtin_functions(text: str) -> None:
    assert evaluate(parse(text), PROFILE, now_ms=T0), text


@pytest.mark.parametrize(
    "text",
    [
        "FILTER len(missing) = 0",  # missing argument: not-ok ...
        "FILTER NOT len(missing) = 0",  # ... even under NOT
        'FILTER toint("abc") = 0',
        "FILTER sqrt(-1) > 0",
        'FILTER emaildomain("nope") = ""',
        'FILTER ipfilter(ip, "not a cidr")',
        'FILTER todatein(ts, "Nowhere/Zone") > 0',
    ],
)
def test_functions_not_ok_never_match(text: str) -> None:
    assert not evaluate(parse(text), PROFILE, now_ms=T0)


def test_unknown_function_and_wrong_arity_are_parse_errors() -> None:
    with pytest.raises(SegmentQLError, match="non existent function timewindow"):
        parse("FILTER timewindow(visits, 5, 30)")
    with pytest.raises(SegmentQLError, match="takes 2 argument"):
        parse("FILTER pow(2)")


def test_function_names_are_case_insensitive() -> None:
    assert parse("FILTER LEN(tags) = 3") == parse("FILTER len(tags) = 3")


def test_registry_names_are_lower_case_and_lexable() -> None:
    for name in FUNCTIONS:
        assert name == name.lower()
        assert parse(f"FILTER {name}(" + ", ".join(["x"] * FUNCTIONS[name].min_args) + ")")
