"""The decoders' shortcuts give the same events and the same rejections as the general path.

Timestamps in the usual ``YYYY-MM-DDThh:mm:ss.fffZ`` form are read by parts, JSON events within
MAX_FIELD_CHARS bytes skip the per-field length check, TSV lines only convert their typed
columns: each case below pins a boundary of one of those shortcuts.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.domain.events import (
    MAX_FIELD_CHARS,
    EventDecodeError,
    decode,
    decode_snowplow_json,
    decode_snowplow_tsv,
    parse_timestamp_ms,
)
from tests.unit.domain.test_events import NOW, PRODUCT, page_view_tsv, transformed_json

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def reference_ms(text: str) -> int:
    """What ``datetime.fromisoformat`` makes of ``text``, in epoch ms (naive = UTC)."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


@given(st.integers(min_value=-62_135_596_800_000, max_value=253_402_300_799_999))
def test_snowplow_timestamps_parse_as_fromisoformat_does(ms: int) -> None:
    dt = EPOCH + timedelta(milliseconds=ms)
    text = dt.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
    assert len(text) == 24
    assert parse_timestamp_ms(text) == reference_ms(text) == ms


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-01T12:00:00Z",
        "2026-01-01T12:00:00.5Z",
        "2026-01-01T12:00:00.123456Z",
        "2026-01-01T12:00:00.123+02:00",
        "2026-01-01 12:00:00.123",
        "2024-02-29T23:59:59.999Z",
        "2026-01-01T12:00:00,123Z",
    ],
)
def test_other_iso_forms_still_parse(text: str) -> None:
    assert parse_timestamp_ms(text) == reference_ms(text)


@pytest.mark.parametrize(
    "text",
    [
        "2023-02-29T00:00:00.000Z",  # no such day
        "2026-01-01T24:00:00.000Z",
        "2026-01-01T12:60:00.000Z",
        "2026-01-01T12:00:60.000Z",  # leap seconds are not ISO-8601 in Python either
        "2026-01-01T12:00:00.0a0Z",
        "2026-01-01T12:00:00.-12Z",
        "2026-01-01T12:00:+1.000Z",
        "２026-01-01T12:00:00.000Z",  # a full-width digit
        "2026-1-01T12:00:00.0000Z",
    ],
)
def test_invalid_timestamps_fail_as_fromisoformat_does(text: str) -> None:
    with pytest.raises(ValueError) as expected:
        datetime.fromisoformat(text)
    with pytest.raises(ValueError) as got:
        parse_timestamp_ms(text)
    assert str(got.value) == str(expected.value)


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


def test_json_nulls_are_absent_and_null_inside_strings_is_text() -> None:
    body = {**transformed_json(), "user_id": None, "page_title": "null", "page_url": "x/null"}
    body["contexts_com_snowplowanalytics_snowplow_ecommerce_product_1"] = None
    event = decode_snowplow_json(encode(body), now_ms=NOW)
    assert "user_id" not in event.atomic
    assert event.atomic["page_title"] == "null" and event.atomic["page_url"] == "x/null"
    assert event.contexts == ()


def test_json_entity_columns_keep_the_event_order() -> None:
    body = {
        "event_id": "e-3",
        "collector_tstamp": "2026-01-01T11:00:00.000Z",
        "contexts_com_acme_b_1": [{"n": 1}],
        "app_id": "web",
        "contexts": {"data": [{"schema": PRODUCT, "data": {"n": 2}}]},
        "contexts_com_acme_a_1": [{"n": 3}, {"n": 4}],
        "derived_contexts": [{"schema": PRODUCT, "data": {"n": 5}}],
    }
    event = decode(encode(body), now_ms=NOW)
    assert [c["data"]["n"] for c in event.contexts] == [1, 2, 3, 4, 5]
    assert list(event.atomic) == ["event_id", "collector_tstamp", "app_id"]


def test_json_unknown_and_malformed_entity_columns_stay_atomic() -> None:
    body = {
        **transformed_json(),
        "contexts_com_acme_x_1": "not a list",
        "unstruct_event_com_acme_y_1": ["not", "an", "object"],
        "eid": "legacy",
    }
    event = decode_snowplow_json(encode(body), now_ms=NOW)
    assert event.atomic["contexts_com_acme_x_1"] == "not a list"
    assert event.atomic["unstruct_event_com_acme_y_1"] == ["not", "an", "object"]
    assert event.atomic["eid"] == "legacy"


def test_json_escaped_key_names_are_still_entity_columns() -> None:
    raw = encode({**transformed_json(), "user_id": "u"}).replace(
        b'"contexts_com_snowplowanalytics', b'"\\u0063ontexts_com_snowplowanalytics'
    )
    event = decode_snowplow_json(raw, now_ms=NOW)
    assert len(event.contexts) == 2


@pytest.mark.parametrize("key", ["page_url", "geo_location", "contexts_com_acme_x_1"])
def test_long_json_fields_are_rejected_in_big_events(key: str) -> None:
    body = {**transformed_json(), key: "x" * (MAX_FIELD_CHARS + 1)}
    with pytest.raises(EventDecodeError, match=f"field {key} is 65537 characters"):
        decode_snowplow_json(encode(body), now_ms=NOW)


def test_big_json_events_with_fields_within_the_limit_decode() -> None:
    body = {**transformed_json(), "page_url": "x" * MAX_FIELD_CHARS, "page_title": "y" * 100}
    assert len(encode(body)) > MAX_FIELD_CHARS
    event = decode_snowplow_json(encode(body), now_ms=NOW)
    assert len(event.atomic["page_url"]) == MAX_FIELD_CHARS


def test_json_errors_come_in_key_order() -> None:
    body = {
        **transformed_json(),
        "contexts": "{broken",
        "page_url": "x" * (MAX_FIELD_CHARS + 1),
    }
    with pytest.raises(EventDecodeError, match="contexts is not valid JSON"):
        decode_snowplow_json(encode(body), now_ms=NOW)
    body = {"page_url": "x" * (MAX_FIELD_CHARS + 1), **body}
    with pytest.raises(EventDecodeError, match="field page_url is"):
        decode_snowplow_json(encode(body), now_ms=NOW)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"event_id": "\xff"}', "event is not valid UTF-8 (byte 14)"),
        (b'{"event_id": ', "event is not valid JSON: "),
        # positions count characters of the text, not bytes
        (b'{"a": "\xc3\xa9", ]', "event is not valid JSON: unexpected character, expected a "
                                 "string key: line 1 column 12 (char 11)"),
        (b"[1, 2]", "event must be a JSON object, got list"),
    ],
)
def test_json_rejections_keep_their_reasons(raw: bytes, reason: str) -> None:
    with pytest.raises(EventDecodeError) as info:
        decode_snowplow_json(raw, now_ms=NOW)
    assert info.value.reason.startswith(reason)


def test_tsv_long_line_checks_every_field() -> None:
    line = page_view_tsv(page_title="t" * MAX_FIELD_CHARS)
    assert decode_snowplow_tsv(line, now_ms=NOW).atomic["page_title"] == "t" * MAX_FIELD_CHARS
    with pytest.raises(EventDecodeError, match="field useragent is 65537 characters"):
        decode_snowplow_tsv(page_view_tsv(useragent="u" * (MAX_FIELD_CHARS + 1)), now_ms=NOW)


def test_tsv_json_columns_are_not_length_checked() -> None:
    products = [{"schema": PRODUCT, "data": {"id": "p" * 70_000}}]
    event = decode_snowplow_tsv(page_view_tsv(contexts={"data": products}), now_ms=NOW)
    assert event.contexts[0]["data"]["id"] == "p" * 70_000


def test_tsv_reports_the_first_bad_column() -> None:
    line = page_view_tsv(page_urlport="x", br_cookies="maybe", doc_width="wide")
    with pytest.raises(EventDecodeError, match="field page_urlport: invalid number"):
        decode_snowplow_tsv(line, now_ms=NOW)
    long_first = page_view_tsv(page_url="x" * (MAX_FIELD_CHARS + 1), br_cookies="maybe")
    with pytest.raises(EventDecodeError, match="field page_url is 65537 characters"):
        decode_snowplow_tsv(long_first, now_ms=NOW)
    typed_first = page_view_tsv(page_urlport="x", useragent="u" * (MAX_FIELD_CHARS + 1))
    with pytest.raises(EventDecodeError, match="field page_urlport: invalid number"):
        decode_snowplow_tsv(typed_first, now_ms=NOW)


def test_tsv_typed_columns_and_untyped_text() -> None:
    event = decode_snowplow_tsv(
        page_view_tsv(
            tr_total="12.5", doc_width="1024", dvce_ismobile="0", etl_tstamp="2026-01-01 10:00:00Z",
            page_title="42", se_label="1",
        ),
        now_ms=NOW,
    )
    atomic = event.atomic
    assert (atomic["tr_total"], atomic["doc_width"], atomic["dvce_ismobile"]) == (12.5, 1024, False)
    assert atomic["etl_tstamp"] == "2026-01-01T10:00:00Z"
    assert (atomic["page_title"], atomic["se_label"]) == ("42", "1")
    assert "contexts" not in atomic and "user_id" not in atomic
