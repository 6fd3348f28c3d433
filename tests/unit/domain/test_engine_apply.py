"""``engine.apply_event`` on plain data: which attributes an event updates, what it marks
dirty, and what the codec then writes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from processor.domain import aggregations, engine
from processor.domain.definitions import AttributeGroup
from processor.domain.entity import EntityState
from processor.domain.records import RawRecord, decode_record
from processor.domain.topology import Topology, compile_topology
from processor.domain.transitions import EntityRef
from processor.state import codec, keys

NOW = 1_750_000_000_000
TTL_MS = 60_000


def iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def event(ts_ms: int, name: str = "page_view", **atomic: Any) -> Any:
    raw = orjson.dumps({
        "event_id": str(uuid.uuid4()), "app_id": "web", "platform": "web",
        "collector_tstamp": iso(ts_ms), "derived_tstamp": iso(ts_ms),
        "event_name": name, "event_vendor": "com.snowplowanalytics.snowplow", "event_version": "1-0-0",
        "event_format": "jsonschema", "domain_userid": "u1", **atomic,
    })  # fmt: skip
    return decode_record(RawRecord(raw, NOW, "snowplow"), now_ms=NOW, max_bytes=1 << 20)


def topology() -> Topology:
    group = AttributeGroup.model_validate({
        "name": "g", "version": 1, "attribute_key": {"name": "domain_userid"}, "ttl": "PT1M",
        "attributes": [
            {"name": "views", "type": "int64", "aggregation": "counter", "events": [{"name": "page_view"}]},
            {"name": "pages", "type": "string_list", "aggregation": "unique_list", "events": [],
             "property": {"type": "atomic", "name": "page_url"}},
            {"name": "labelled", "type": "int64", "aggregation": "counter", "events": [],
             "criteria": {"all": [{"property": {"type": "atomic", "name": "se_label"},
                                   "operator": "is not null"}]}},
        ],
    })  # fmt: skip
    return compile_topology(1, [group], [])


def apply(state: EntityState, topo: Topology, ev: Any) -> None:
    engine.apply_event(state, ev, topo, cause="events/0/1", now_ms=NOW)


def read(state: EntityState, topo: Topology, name: str, now_ms: int = NOW) -> Any:
    slot, spec = topo.attribute_index("domain_userid")[name]
    return aggregations.read(spec, state.attribute(slot), now_ms)


def test_selected_attributes_and_criteria() -> None:
    topo = topology()
    state = EntityState(EntityRef("domain_userid", "u1"))
    apply(state, topo, event(NOW - 3000, page_url="https://x/1"))
    apply(state, topo, event(NOW - 2000, name="search", page_url="https://x/2", se_label="hat"))
    apply(state, topo, event(NOW - 1000, name="search"))  # no label: criteria fail; no page_url
    assert read(state, topo, "views") == 1  # page_view only
    assert read(state, topo, "pages") == ["https://x/1", "https://x/2"]
    assert read(state, topo, "labelled") == 1


def test_a_failed_criteria_leaves_the_attribute_untouched_and_clean() -> None:
    topo = topology()
    state = EntityState(EntityRef("domain_userid", "u1"))
    apply(state, topo, event(NOW - 1000, name="search"))
    assert ("g", 1, "labelled") not in state.attributes()
    assert ("g", 1, "pages") in state.attributes()  # unusable value: stored empty, as before
    assert state.dirty_group_keys() == {("g", 1)}
    assert read(state, topo, "pages") is None  # no default value


def test_lifetime_ttl_resets_on_a_late_enough_event() -> None:
    topo = topology()
    state = EntityState(EntityRef("domain_userid", "u1"))
    apply(state, topo, event(NOW - 10 * TTL_MS, page_url="https://x/old"))
    apply(state, topo, event(NOW - 1000, page_url="https://x/new"))
    assert read(state, topo, "views") == 1
    assert read(state, topo, "pages") == ["https://x/new"]


def test_payload_holds_every_changed_field_once_and_clears() -> None:
    topo = topology()
    state = EntityState(EntityRef("domain_userid", "u1"))
    for ts in (NOW - 2000, NOW - 1000):
        apply(state, topo, event(ts, page_url="https://x/1"))
        state.advance("events", 0, ts)
    sets, deletes = codec.changed_fields(state)
    assert set(sets) == {
        keys.group_field("g", 1), keys.profile_field(engine.LAST_ACTIVE_FIELD), keys.IDENTIFIERS_FIELD,
    }  # fmt: skip
    assert deletes == []
    assert orjson.loads(sets[keys.group_field("g", 1)])["views"] == [NOW - 1000, 2]
    assert codec.watermark_args(state) == {keys.watermark_field("events", 0): NOW - 1000}
    state.clear_dirty()
    assert codec.changed_fields(state) == ({}, [])
    assert codec.watermark_args(state) == {}
