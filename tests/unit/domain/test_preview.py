"""``domain.preview``: a draft attribute group evaluated over a list of events, in memory."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from processor.domain.definitions import AttributeGroup, AttributeKey
from processor.domain.events import EventDecodeError
from processor.domain.preview import decode_records, preview_group
from processor.domain.records import RawRecord, decode_record

NOW = 1_750_000_000_000
HOUR = 3_600_000


def iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def snowplow(duid: str, ts_ms: int, name: str = "page_view", app_id: str = "web", **atomic: Any) -> bytes:
    return orjson.dumps({
        "event_id": str(uuid.uuid4()), "app_id": app_id, "platform": "web",
        "collector_tstamp": iso(ts_ms), "derived_tstamp": iso(ts_ms),
        "event_name": name, "event_vendor": "com.snowplowanalytics.snowplow", "event_version": "1-0-0",
        "event_format": "jsonschema", "domain_userid": duid, **atomic,
    })  # fmt: skip


def group(*attributes: dict[str, Any], key: Any = None) -> AttributeGroup:
    return AttributeGroup.model_validate({
        "name": "draft", "version": 1, "attribute_key": key or {"name": "domain_userid"},
        "attributes": list(attributes) or [COUNT],
    })  # fmt: skip


PAGE_VIEW = {"vendor": "com.snowplowanalytics.snowplow", "name": "page_view", "version": "1-0-0"}
COUNT = {"name": "count_page_views", "type": "int32", "events": [PAGE_VIEW], "aggregation": "counter"}
LAST_URL = {"name": "last_url", "type": "string", "events": [], "aggregation": "last",
            "property": {"type": "atomic", "name": "page_url"}}  # fmt: skip


def events(*raws: bytes, stream: str | None = "snowplow") -> list[Any]:
    decoded, failed = decode_records([RawRecord(r, NOW, stream) for r in raws], now_ms=NOW)
    assert failed == 0
    return decoded


def test_counts_and_last_value_per_key_most_recent_first() -> None:
    evs = events(
        snowplow("a", NOW - 50_000, page_url="https://x/1"),
        snowplow("a", NOW - 40_000, page_url="https://x/2"),
        snowplow("b", NOW - 10_000, page_url="https://x/3"),
        snowplow("a", NOW - 30_000, name="page_ping", page_url="https://x/ping"),
    )
    rows = preview_group(group(COUNT, LAST_URL), evs, now_ms=NOW, since_ms=NOW - HOUR)
    assert rows == [
        {"domain_userid": "b", "count_page_views": 1, "last_url": "https://x/3"},
        {"domain_userid": "a", "count_page_views": 2, "last_url": "https://x/ping"},
    ]


def test_requested_ids_in_order_unknown_ids_read_defaults() -> None:
    evs = events(snowplow("a", NOW - 1000), snowplow("b", NOW - 2000), snowplow("b", NOW - 3000))
    with_default = dict(COUNT, default_value=0)
    rows = preview_group(group(with_default), evs, now_ms=NOW, key_ids=["b", "zz", "a"])
    assert rows == [
        {"domain_userid": "b", "count_page_views": 2},
        {"domain_userid": "zz", "count_page_views": 0},
        {"domain_userid": "a", "count_page_views": 1},
    ]


def test_window_app_ids_future_and_duplicates_are_filtered() -> None:
    dup = snowplow("a", NOW - 1000)
    evs = events(
        dup, dup,
        snowplow("a", NOW - 2 * HOUR),  # before the window
        snowplow("a", NOW + 60_000),  # in the future
        snowplow("a", NOW - 500, app_id="mobile"),
    )  # fmt: skip
    assert preview_group(group(), evs, now_ms=NOW, since_ms=NOW - HOUR, app_ids=["web"]) == [
        {"domain_userid": "a", "count_page_views": 1}
    ]
    both = preview_group(group(), evs, now_ms=NOW, since_ms=NOW - HOUR, app_ids=["web", "mobile"])
    assert both == [{"domain_userid": "a", "count_page_views": 2}]


def test_limit_criteria_and_period() -> None:
    only_pricing = dict(COUNT, name="pricing_views", criteria={"all": [{
        "property": {"type": "atomic", "name": "page_url"}, "operator": "like", "value": "%pricing%"}]})
    last_10m = dict(COUNT, name="views_10m", period="PT10M")
    evs = events(
        snowplow("a", NOW - 30 * 60_000, page_url="https://x/pricing"),
        snowplow("a", NOW - 60_000, page_url="https://x/home"),
        *(snowplow(f"u{i}", NOW - 100_000 + i) for i in range(5)),
    )
    rows = preview_group(group(only_pricing, last_10m), evs, now_ms=NOW, limit=3)
    assert rows == [
        {"domain_userid": "a", "pricing_views": 1, "views_10m": 1},
        {"domain_userid": "u4", "pricing_views": None, "views_10m": 1},
        {"domain_userid": "u3", "pricing_views": None, "views_10m": 1},
    ]


def test_custom_key_inline_or_given() -> None:
    inline = {"name": "app", "property": {"type": "atomic", "name": "app_id"}}
    evs = events(snowplow("a", NOW - 10), snowplow("b", NOW - 20), snowplow("c", NOW - 5, app_id="m"))
    assert preview_group(group(key=inline), evs, now_ms=NOW) == [
        {"app": "m", "count_page_views": 1}, {"app": "web", "count_page_views": 2}]  # fmt: skip
    named = group(key={"name": "app"})
    full = AttributeKey.model_validate(inline)
    assert preview_group(named, evs, now_ms=NOW, key_ids=["web"], key=full) == [
        {"app": "web", "count_page_views": 2}]  # fmt: skip


def test_decoder_follows_the_stream_header() -> None:
    generic = orjson.dumps({"user_id": "u1", "event": "signup", "ts": NOW - 5000})
    event = decode_record(RawRecord(generic, NOW - 1, "lytics"), now_ms=NOW)
    assert (event.stream, event.name, event.timestamp_ms) == ("lytics", "signup", NOW - 5000)
    untimed = orjson.dumps({"user_id": "u1", "when": NOW - 7000})
    stamped = decode_record(RawRecord(untimed, NOW - 1, "lytics"), now_ms=NOW)
    assert stamped.timestamp_ms == NOW - 1  # no "ts": the record's produce time
    timed = decode_record(RawRecord(untimed, NOW - 1, "lytics", "when"), now_ms=NOW)
    assert timed.timestamp_ms == NOW - 7000
    auto = decode_record(RawRecord(snowplow("a", NOW - 3), NOW, None), now_ms=NOW)
    assert auto.stream is None and auto.atomic["domain_userid"] == "a"
    with pytest.raises(EventDecodeError):
        decode_record(RawRecord(b"{not json", NOW, "snowplow"), now_ms=NOW)
    decoded, failed = decode_records(
        [RawRecord(b"{bad", NOW, "x"), RawRecord(generic, NOW, "x")], now_ms=NOW)
    assert (len(decoded), failed) == (1, 1)


def test_generic_events_feed_builtin_keys() -> None:
    raws = [orjson.dumps({"user_id": "u1", "event": "buy", "ts": NOW - i}) for i in range(3)]
    evs, _ = decode_records([RawRecord(r, NOW, "shop") for r in raws], now_ms=NOW)
    buys = {"name": "buys", "type": "int32", "events": [], "aggregation": "counter"}
    rows = preview_group(group(buys, key={"name": "user_id"}), evs, now_ms=NOW)
    assert rows == [{"user_id": "u1", "buys": 3}]


def test_a_group_that_cannot_run_raises() -> None:
    bad = {"name": "since", "type": "double", "events": [], "aggregation": "time_since_last"}
    with pytest.raises(ValueError):
        preview_group(group(bad), [], now_ms=NOW)
