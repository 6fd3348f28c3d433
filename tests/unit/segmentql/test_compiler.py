"""The compiled evaluator agrees with the tree-walking reference, node for node.

Random trees (from the property tests) and trees aimed at the compiler's fast paths (a field
against a literal, IN lists, numeric BETWEEN, date math) are evaluated both ways over random
profiles, through a mapping that records every key it is asked about: the values, the errors
and the sequence of field reads must all be the same.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.segmentql import evaluate, parse
from processor.segmentql.ast import (
    Between,
    Binary,
    Exists,
    Expr,
    Ident,
    Include,
    ListExpr,
    Literal,
    Logical,
    Not,
)
from processor.segmentql.compiler import IdentityCache, compile_expr, compiled
from processor.segmentql.evaluator import Evaluator
from tests.unit.segmentql.test_properties import expressions, profiles

T0 = 1_767_312_000_000
DAY = 86_400_000


class RecordingProfile(Mapping[str, Any]):
    """A profile that logs each ``in`` and ``[]`` it answers, like a lazy view would be read."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.reads: list[tuple[str, object]] = []

    def __getitem__(self, key: str) -> Any:
        self.reads.append(("get", key))
        return self.data[key]

    def __contains__(self, key: object) -> bool:
        self.reads.append(("in", key))
        return key in self.data

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def _resolver(name: str) -> bool | None:
    if len(name) % 3 == 0:
        raise LookupError(name)
    return None if len(name) % 3 == 1 else len(name) % 2 == 0


def _outcome(run: Callable[[], Any]) -> tuple[str, str]:
    try:
        value = run()
    except Exception as err:  # the two must fail alike, too
        return ("raised", type(err).__name__)
    return (type(value).__name__, repr(value))  # repr tells 1 from 1.0 from True, keeps NaN


def assert_same(expr: Expr, data: dict[str, Any], now: int) -> None:
    for resolve in (_resolver, None):
        reference, profile = RecordingProfile(data), RecordingProfile(data)
        expected = _outcome(partial(Evaluator(reference, now, resolve).value, expr))
        actual = _outcome(partial(compile_expr(expr), profile, now, resolve))
        assert actual == expected, (expr, data)
        assert profile.reads == reference.reads, (expr, data)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions, profiles, st.integers(-(10**13), 10**14))
def test_random_trees_agree(expr: Expr, data: dict[str, Any], now: int) -> None:
    assert_same(expr, data, now)


# Trees aimed at the fast paths: few field names, so profiles actually hold them.
FIELDS = ["x", "y", "tags"]
fields = st.sampled_from(FIELDS).map(lambda name: Ident((name,)))
_strings = st.sampled_from([
    "Chrome", "chrome", "", "5", "5.5", " 7 ", "t", "true", "now", "now-7d", "now+3d", "now-1M",
    "2026-01-01", "2026-01-01T00:00:00Z", "2025-12-31T23:59:59.999Z", "12/18/2015", "*@x.com",
    "a*", "[a-c]*", "1767312000", "nowhere", "a/b",
])
_numbers = st.sampled_from([0, 1, 5, -3, 2.5, -0.0, 1e300, 10**20, T0, T0 // 1000]) | st.integers(
    -100, 100) | st.floats(-1e6, 1e6, allow_nan=False)
literal_values = _strings | _numbers | st.booleans()
literals = st.builds(Literal, literal_values | st.none())
_OPS = ["=", "==", "!=", ">", ">=", "<", "<=", "like", "contains", "+", "-", "*", "/", "%"]

comparisons = st.one_of(
    st.builds(Binary, st.sampled_from(_OPS), fields, literals),
    st.builds(Binary, st.sampled_from(["in", "intersects"]), fields,
              st.builds(ListExpr, st.lists(literals, max_size=4).map(tuple)) | literals),
    st.builds(Binary, st.sampled_from(["in", "intersects"]), fields,
              st.builds(ListExpr, st.lists(st.builds(Literal, _strings), max_size=4).map(tuple))),
    st.builds(Binary, st.sampled_from(["in", "intersects"]), fields,
              st.builds(ListExpr, st.lists(st.builds(Literal, _numbers), max_size=4).map(tuple))),
    st.builds(Between, fields, st.builds(Literal, _numbers), st.builds(Literal, _numbers)),
    st.builds(Between, fields, literals, literals),
    st.builds(Exists, fields),
    st.builds(Not, st.builds(Include, st.sampled_from(["ab", "abc", "abcd", "abcde"]))),
)
targeted = st.recursive(
    comparisons,
    lambda inner: st.one_of(
        st.builds(Not, inner),
        st.builds(Logical, st.sampled_from(["and", "or"]),
                  st.lists(inner, min_size=1, max_size=3).map(tuple)),
        st.builds(Binary, st.sampled_from(_OPS), inner, literals),
    ),
    max_leaves=4,
)
_scalars = (st.none() | st.booleans() | _strings | _numbers
            | st.sampled_from([math.nan, math.inf, -math.inf]))
field_values = _scalars | st.lists(_scalars, max_size=3) | st.lists(_strings, max_size=3) | (
    st.dictionaries(_strings, _scalars, max_size=2))
targeted_profiles = st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=3)
clocks = st.sampled_from([T0, T0 + 1, 0, -DAY, 10**14]) | st.integers(-(10**13), 10**14)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(targeted, targeted_profiles, clocks)
def test_fast_paths_agree(expr: Expr, data: dict[str, Any], now: int) -> None:
    assert_same(expr, data, now)


def test_compiled_once_per_statement_and_dropped_with_it() -> None:
    stmt = parse('FILTER AND(visits >= 3, country IN ("de", "fr"))')
    assert compiled(stmt) is compiled(stmt)
    assert evaluate(stmt, {"visits": 3, "country": "de"}, now_ms=T0)
    assert not evaluate(stmt, {"visits": 3, "country": "us"}, now_ms=T0)

    built: list[object] = []
    cache: IdentityCache[int] = IdentityCache(lambda obj: built.append(obj) or len(built))
    first = parse("FILTER a > 1")
    assert cache.get(first) == cache.get(first) == 1
    twin = parse("FILTER a > 1")  # equal, but another object: its own entry
    assert cache.get(twin) == 2
    del first, twin
    built.clear()
    gc.collect()
    assert not cache._entries  # entries go with their statements
