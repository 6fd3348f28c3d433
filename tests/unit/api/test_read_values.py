"""The read path's value readers (``processor.state.values``) and its decode of HMGET replies
(``reads._decode``) give exactly what ``aggregations.read`` gives, on random states of every
kind, window and TTL, at random read times (also before the newest event), with keys of every
type (strings, numbers, booleans, strings that start with the tag). "Exactly" is compared as
the JSON the API sends: same types, same order of list items and dict keys."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.domain import aggregations
from processor.domain.aggregations import AggSpec
from processor.domain.definitions import AttributeGroup
from processor.state import reads, values
from tests.unit.aggregations.test_aggregation_reference import specs

VALUES = ["a", "b", "c", "/page/1", "x,y", "\x1fi1", "1", "", 1, 2, 2.0, 2.5, -1, 0, True, False,
          None, math.inf, [1], {"k": 1}]  # fmt: skip
PLAIN = ["a", "b", "c", "/page/1", "x,y", "", "é"]
PERIODS = [None, 1500, 7000, 60_000]




def events(pool: list[Any]) -> st.SearchStrategy[list[tuple[Any, int]]]:
    return st.lists(st.tuples(st.sampled_from(pool), st.integers(-12_000, 30_000)), max_size=40)


def stored(spec: AggSpec, applied: list[tuple[Any, int]]) -> bytes:
    state = aggregations.new_state(spec)
    for value, offset in applied:
        state = aggregations.apply(spec, state, value, 1_000_000 + offset)
    return orjson.dumps(state)


def expected(spec: AggSpec, raw: bytes, now: int) -> bytes:
    return orjson.dumps(aggregations.read(spec, orjson.loads(raw), now))


def read_column(spec: AggSpec, raws: list[bytes], now: int) -> list[Any]:
    """``values.column_reader`` on stored texts, as ``reads._decode`` calls it."""
    text, states = values.parse_all(raws)
    return values.column_reader(spec)(states, now, not values.has_tagged_keys(text))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs(PERIODS, (None, 0, "n/a", ["d"])), columns=st.lists(st.one_of(events(VALUES), events(PLAIN)), min_size=1, max_size=4),
       now_offset=st.integers(-20_000, 200_000))  # fmt: skip
def test_readers_match_aggregations_read(
    spec: AggSpec, columns: list[list[tuple[Any, int]]], now_offset: int
) -> None:
    now = 1_000_000 + now_offset
    raws = [stored(spec, applied) for applied in columns]
    want = [expected(spec, raw, now) for raw in raws]
    read = values.value_reader(spec)
    assert [orjson.dumps(read(orjson.loads(raw), now)) for raw in raws] == want
    assert [orjson.dumps(v) for v in read_column(spec, raws, now)] == want


def test_plain_and_tagged_keys_in_one_column() -> None:
    """One tagged key anywhere in a column sends the whole column the general way."""
    for kind in ("unique_list", "category_count"):
        spec = AggSpec(kind)
        raws = [stored(spec, [("a", 1), ("b", 2)]), stored(spec, [(1, 1), ("1", 2), (True, 3)])]
        assert [orjson.dumps(v) for v in read_column(spec, raws, 10)] == [
            expected(spec, raw, 10) for raw in raws]  # fmt: skip


def test_parse_all_is_per_text_loads() -> None:
    texts = [b"[1,2]", b'{"a":[1,{"b":null}]}', b'"x,y"', b"null", b" 3 "]
    assert values.parse_all(texts)[1] == [orjson.loads(t) for t in texts]
    for broken in ([b"[1", b"2]"], [b"1,2", b"3"], [b"[1],[2]", b"[[3]", b"[4]]"][:2], [b"{"]):
        with pytest.raises(orjson.JSONDecodeError):
            values.parse_all(broken)


def group() -> AttributeGroup:
    kinds = [("counter", None, "int64"), ("counter", "PT10M", "int64"), ("last", None, "string"),
             ("unique_list", None, "string_list"), ("category_count", None, "dict"),
             ("time_since_last", None, "double"), ("mean", "PT1H", "double")]  # fmt: skip
    attributes = [{"name": f"a{i}", "type": type_, "events": [], "aggregation": kind,
                   **({"property": {"type": "atomic", "name": "page_url"}}
                      if kind not in ("counter", "time_since_last") else {}),
                   **({"period": period} if period else {}),
                   **({"time_unit": "s"} if kind.startswith("time_since") else {}),
                   **({"default_value": 7} if i == 0 else {})}
                  for i, (kind, period, type_) in enumerate(kinds)]  # fmt: skip
    return AttributeGroup.model_validate({
        "name": "g", "version": 1, "owner": "me@example.com", "is_published": True,
        "attribute_key": {"name": "domain_userid"}, "attributes": attributes,
        "fields": [{"name": "f", "type": "string"}],
        "batch_source": {"name": "src", "timestamp_field": "T", "database": "D", "schema": "S",
                         "table": "T"}})  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_decode_matches_read_per_cell(data: st.DataObject) -> None:
    """Rows as HMGET returns them: some entities never seen (all None), some known without
    state for an attribute (its default) or without the group's field at all, batch fields as
    plain JSON in the group's object."""
    g = group()
    names = [a.name for a in g.attributes or ()] + ["f"]
    read = reads.compile_read([(g, names)], "domain_userid")
    specs_ = [column.spec for column in read.columns]
    now = 1_000_000 + data.draw(st.integers(0, 100_000))
    rows = []
    cells = []  # per row, the stored text of each column (None: no state)
    for _ in range(data.draw(st.integers(1, 5))):
        known = data.draw(st.booleans())
        objects: dict[str, Any] = {}
        row_cells: list[bytes | None] = []
        for name, spec in zip(names, specs_, strict=True):
            present = known and data.draw(st.booleans())
            raw = None
            if present and spec is None:
                raw = orjson.dumps(data.draw(st.sampled_from(["v", 1, None, [1]])))
            elif present:
                raw = stored(spec, data.draw(events(VALUES)))
            if raw is not None:
                objects[name] = orjson.loads(raw)
            row_cells.append(raw)
        field = orjson.dumps(objects) if objects or (known and data.draw(st.booleans())) else None
        rows.append([field, b'{"domain_userid":"u"}' if known else None])
        cells.append(row_cells)
    decoded = reads._decode(read, rows, now)
    for i, (spec, got) in enumerate(zip(specs_, decoded, strict=True)):
        want = []
        for row, row_cells in zip(rows, cells, strict=True):
            raw = row_cells[i]
            if spec is None:
                want.append(None if raw is None else orjson.loads(raw))
            elif raw is not None:
                want.append(aggregations.read(spec, orjson.loads(raw), now))
            elif row[-1] is not None:
                want.append(aggregations.read(spec, aggregations.new_state(spec), now))
            else:
                want.append(None)
        assert orjson.dumps(got) == orjson.dumps(want)


def test_a_read_of_two_groups_takes_each_field_once() -> None:
    g = group()
    other = g.model_copy(update={"name": "h"})
    read = reads.compile_read([(g, ["a0", "a2"]), (other, ["a0"]), (g, ["f"])], "domain_userid")
    assert read.column_at == (0, 0, 1, 0)
    assert read.tail.count(b"g:g:1") == 1 and read.tail.count(b"g:h:1") == 1
