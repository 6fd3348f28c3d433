"""Decoding Snowplow TSV / JSON and generic JSON into Event, and every rejection path."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.domain.events import (
    ATOMIC_COLUMNS,
    MAX_FIELD_CHARS,
    EventDecodeError,
    decode,
    decode_generic_json,
    decode_snowplow_json,
    decode_snowplow_tsv,
    identifiers,
    parse_timestamp_ms,
    shred_key,
)

NOW = 1_767_268_800_000  # 2026-01-01T12:00:00Z
PRODUCT = "iglu:com.snowplowanalytics.snowplow.ecommerce/product/jsonschema/1-0-0"
ACTION = "iglu:com.snowplowanalytics.snowplow.ecommerce/snowplow_ecommerce_action/jsonschema/1-0-2"


def tsv(**columns: Any) -> bytes:
    """An enriched TSV line with the given columns set (dicts are JSON-encoded)."""
    values = {k: json.dumps(v) if isinstance(v, dict) else str(v) for k, v in columns.items()}
    unknown = set(values) - set(ATOMIC_COLUMNS)
    assert not unknown, unknown
    return "\t".join(values.get(c, "") for c in ATOMIC_COLUMNS).encode()


def page_view_tsv(**extra: Any) -> bytes:
    base: dict[str, Any] = {
        "app_id": "web",
        "platform": "web",
        "collector_tstamp": "2026-01-01 11:59:59.000",
        "derived_tstamp": "2026-01-01 11:59:58.123",
        "event": "page_view",
        "event_id": "c6ef3124-b53a-4b13-a233-0088f79dcbcb",
        "domain_userid": "duid-1",
        "domain_sessionid": "dsid-1",
        "page_url": "https://shop.example/pricing",
        "page_urlport": "443",
        "geo_latitude": "51.5",
        "br_cookies": "1",
        "event_vendor": "com.snowplowanalytics.snowplow",
        "event_name": "page_view",
        "event_format": "jsonschema",
        "event_version": "1-0-0",
    }
    base.update(extra)
    return tsv(**base)


def test_enriched_event_has_131_columns() -> None:
    assert len(ATOMIC_COLUMNS) == 131
    assert ATOMIC_COLUMNS[0] == "app_id" and ATOMIC_COLUMNS[-1] == "true_tstamp"


def test_tsv_page_view_decodes_atomic_fields_with_column_types() -> None:
    event = decode_snowplow_tsv(page_view_tsv(), now_ms=NOW)
    assert event.event_id == "c6ef3124-b53a-4b13-a233-0088f79dcbcb"
    assert event.timestamp_ms == NOW - 1877  # derived_tstamp wins over collector_tstamp
    assert (event.vendor, event.name, event.version) == (
        "com.snowplowanalytics.snowplow",
        "page_view",
        "1-0-0",
    )
    assert event.atomic["page_urlport"] == 443
    assert event.atomic["geo_latitude"] == 51.5
    assert event.atomic["br_cookies"] is True
    assert event.atomic["derived_tstamp"] == "2026-01-01T11:59:58.123Z"
    assert "user_id" not in event.atomic  # empty column = absent
    assert event.unstruct is None and event.contexts == ()
    assert event.stream is None and event.fields == {}


def test_tsv_trailing_newline_is_accepted() -> None:
    assert decode_snowplow_tsv(page_view_tsv() + b"\n").event_id.startswith("c6ef")


def test_tsv_falls_back_to_collector_tstamp() -> None:
    event = decode_snowplow_tsv(page_view_tsv(derived_tstamp=""))
    assert event.timestamp_ms == NOW - 1000


def test_tsv_unstruct_and_contexts_and_derived_contexts() -> None:
    raw = page_view_tsv(
        event="unstruct",
        event_vendor="com.snowplowanalytics.snowplow.ecommerce",
        event_name="snowplow_ecommerce_action",
        event_version="1-0-2",
        unstruct_event={
            "schema": "iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0",
            "data": {"schema": ACTION, "data": {"type": "add_to_cart"}},
        },
        contexts={
            "schema": "iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-0",
            "data": [{"schema": PRODUCT, "data": {"id": "p1", "price": 9.5}}],
        },
        derived_contexts={
            "schema": "iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-0",
            "data": [{"schema": "iglu:nl.basjes/yauaa_context/jsonschema/1-0-4", "data": {}}],
        },
    )
    event = decode_snowplow_tsv(raw)
    assert event.unstruct == {"schema": ACTION, "data": {"type": "add_to_cart"}}
    assert [c["schema"] for c in event.contexts] == [
        PRODUCT,
        "iglu:nl.basjes/yauaa_context/jsonschema/1-0-4",
    ]
    assert event.name == "snowplow_ecommerce_action"


def test_legacy_event_without_event_name_columns_is_named_from_event() -> None:
    raw = page_view_tsv(event="struct", event_vendor="", event_name="", event_version="")
    event = decode_snowplow_tsv(raw)
    assert (event.vendor, event.name, event.version) == ("com.google.analytics", "event", "1-0-0")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"a\tb\tc", "expected 131 tab-separated fields, got 3"),
        (b"\xff\xfe", "not valid UTF-8"),
        (page_view_tsv(derived_tstamp="yesterday"), "bad timestamp in derived_tstamp"),
        (page_view_tsv(derived_tstamp="", collector_tstamp=""), "neither derived_tstamp"),
        (page_view_tsv(event_id=""), "no event_id"),
        (page_view_tsv(page_urlport="https"), "field page_urlport: invalid number"),
        (page_view_tsv(br_cookies="yes"), "field br_cookies: invalid boolean"),
        (page_view_tsv(contexts="{not json"), "contexts is not valid JSON"),
        (page_view_tsv(contexts={"data": [{"data": {}}]}), "self-describing entities"),
        (page_view_tsv(unstruct_event={"data": 1}), "unstruct_event must be"),
        (page_view_tsv(page_url="x" * (MAX_FIELD_CHARS + 1)), "field page_url is 65537"),
    ],
)
def test_tsv_rejections_carry_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(EventDecodeError) as info:
        decode_snowplow_tsv(raw, now_ms=NOW)
    assert reason in info.value.reason


def test_oversized_event_is_rejected_before_parsing() -> None:
    with pytest.raises(EventDecodeError, match="event is 2000 bytes, limit 1000"):
        decode(b"{" + b" " * 1998 + b"}", now_ms=NOW, max_bytes=1000)


def test_future_events_are_rejected_but_one_day_of_skew_is_tolerated() -> None:
    ok = decode_snowplow_tsv(page_view_tsv(derived_tstamp="2026-01-02 11:00:00"), now_ms=NOW)
    assert ok.timestamp_ms > NOW
    with pytest.raises(EventDecodeError, match="more than 1 day in the future"):
        decode_snowplow_tsv(page_view_tsv(derived_tstamp="2026-01-02 12:00:01"), now_ms=NOW)


def transformed_json() -> dict[str, Any]:
    return {
        "app_id": "web",
        "platform": "web",
        "event_id": "e-1",
        "collector_tstamp": "2026-01-01T11:00:00.000Z",
        "derived_tstamp": "2026-01-01T11:00:00.500Z",
        "event": "unstruct",
        "event_vendor": "com.snowplowanalytics.snowplow.ecommerce",
        "event_name": "snowplow_ecommerce_action",
        "event_format": "jsonschema",
        "event_version": "1-0-2",
        "domain_userid": "duid-2",
        "user_id": "",
        "unstruct_event_com_snowplowanalytics_snowplow_ecommerce_snowplow_ecommerce_action_1": {
            "type": "add_to_cart"
        },
        "contexts_com_snowplowanalytics_snowplow_ecommerce_product_1": [
            {"id": "p1", "price": 1.5},
            {"id": "p2", "price": 2.5},
        ],
        "geo_location": "51.5,0.1",
    }


def test_snowplow_transformed_json_shape() -> None:
    event = decode_snowplow_json(json.dumps(transformed_json()).encode(), now_ms=NOW)
    assert event.event_id == "e-1"
    assert event.timestamp_ms == NOW - 3_599_500
    assert event.unstruct == {"schema": ACTION, "data": {"type": "add_to_cart"}}
    assert [c["shred_key"] for c in event.contexts] == [
        "com_snowplowanalytics_snowplow_ecommerce_product_1"
    ] * 2
    assert all(c["schema"] is None for c in event.contexts)
    assert event.contexts[1]["data"] == {"id": "p2", "price": 2.5}
    assert identifiers(event) == {"domain_userid": "duid-2"}  # empty user_id is not an id


def test_snowplow_plain_json_shape_with_wrapped_and_bare_self_describing_json() -> None:
    body = {
        "event_id": "e-2",
        "collector_tstamp": "2026-01-01T10:00:00Z",
        "unstruct_event": {"schema": ACTION, "data": {"type": "remove_from_cart"}},
        "contexts": {"data": [{"schema": PRODUCT, "data": {"price": 3}}]},
        "derived_contexts": json.dumps({"data": [{"schema": PRODUCT, "data": {"price": 4}}]}),
        "user_id": "u-9",
    }
    event = decode(json.dumps(body).encode(), now_ms=NOW)
    assert event.stream is None
    assert event.name == "snowplow_ecommerce_action" and event.version == "1-0-2"
    assert [c["data"]["price"] for c in event.contexts] == [3, 4]
    assert identifiers(event) == {"user_id": "u-9"}


def test_generic_json_with_iso_epoch_seconds_and_ms_timestamps() -> None:
    iso = decode_generic_json(b'{"ts": "2026-01-01T11:00:00Z"}', stream="web", now_ms=NOW)
    secs = decode_generic_json(b'{"ts": 1767265200}', stream="web", now_ms=NOW)
    ms = decode_generic_json(b'{"ts": 1767265200000}', stream="web", now_ms=NOW)
    text_ms = decode_generic_json(b'{"ts": "1767265200000"}', stream="web", now_ms=NOW)
    assert iso.timestamp_ms == secs.timestamp_ms == ms.timestamp_ms == text_ms.timestamp_ms
    assert iso.timestamp_ms == NOW - 3_600_000


def test_generic_json_without_timestamp_uses_now_and_hashes_an_id() -> None:
    raw = b'{"email": "a@b.c", "user_id": "u1", "event": "signup"}'
    first = decode_generic_json(raw, stream="web", now_ms=NOW)
    second = decode_generic_json(raw, stream="web", now_ms=NOW + 5)
    assert first.timestamp_ms == NOW
    assert first.event_id == second.event_id and len(first.event_id) == 32
    assert first.fields["email"] == "a@b.c" and first.stream == "web"
    assert first.name == "signup"
    assert identifiers(first) == {"user_id": "u1"}


def test_generic_json_id_field_is_used_when_present() -> None:
    event = decode_generic_json(b'{"id": 42}', stream="s", id_field="id", now_ms=NOW)
    assert event.event_id == "42"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"[1, 2]", "must be a JSON object, got list"),
        (b"{nope", "event is not valid JSON"),
        (b'{"ts": true}', "bad timestamp in ts"),
        (b'{"ts": "last tuesday"}', "bad timestamp in ts"),
        (b'{"ts": 99999999999999}', "more than 1 day in the future"),
        (b'{"note": "' + b"x" * (MAX_FIELD_CHARS + 1) + b'"}', "field note is"),
    ],
)
def test_generic_rejections(raw: bytes, reason: str) -> None:
    with pytest.raises(EventDecodeError) as info:
        decode_generic_json(raw, stream="s", now_ms=NOW)
    assert reason in info.value.reason


def test_decode_detects_the_shape() -> None:
    assert decode(page_view_tsv(), now_ms=NOW).name == "page_view"
    assert decode(json.dumps(transformed_json()).encode(), now_ms=NOW).event_id == "e-1"
    generic = decode(b' {"event": "x", "ts": 1767265200}', stream="lytics", now_ms=NOW)
    assert generic.stream == "lytics" and generic.vendor is None
    assert decode(b'{"a": 1}', now_ms=NOW).stream == "default"


def test_shred_key_matches_the_analytics_sdk() -> None:
    assert shred_key("com.acme-co", "myEvent", 2) == "com_acme_co_my_event_2"
    assert shred_key("com.snowplowanalytics.snowplow", "web_page", 1) == (
        "com_snowplowanalytics_snowplow_web_page_1"
    )


@given(st.integers(min_value=0, max_value=4_102_444_800_000))
def test_timestamp_ms_round_trips_exactly(ms: int) -> None:
    from datetime import UTC, datetime, timedelta

    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    text = dt.strftime("%Y-%m-%d %H:%M:%S.") + f"{dt.microsecond // 1000:03d}"
    assert parse_timestamp_ms(text) == ms


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_but_decode_errors(raw: bytes) -> None:
    try:
        decode(raw, now_ms=NOW)
    except EventDecodeError as exc:
        assert exc.reason
