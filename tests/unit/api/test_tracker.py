"""Tracker protocol payloads -> enriched JSON (pure; processor.domain.tracker)."""

from __future__ import annotations

import base64

import orjson
import pytest

from processor.domain.events import decode_snowplow_json
from processor.domain.tracker import (
    ANONYMOUS_NUID,
    TrackerPayloadError,
    derived_tstamp_ms,
    format_tstamp,
    payloads_from_post,
    to_enriched,
)

NOW = 1_767_268_800_000  # 2026-01-01T12:00:00Z
EID = "3f2a6a1e-9a3e-4c1b-8e0f-1c2d3e4f5a6b"
CART = {"schema": "iglu:com.acme/add_to_cart/jsonschema/1-0-2", "data": {"sku": "A1", "qty": 2}}
USER_CTX = {"schema": "iglu:com.acme/user/jsonschema/1-0-0", "data": {"tier": "gold"}}


def b64url(doc: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(doc)).decode().rstrip("=")


def page_view(**extra: str) -> dict[str, str]:
    return {"e": "pv", "eid": EID, "p": "web", "aid": "shop", "tv": "py-1.1.0",
            "duid": "d-1", "sid": "s-1", "vid": "3", "uid": "u-1",
            "url": "https://shop.example.com:8443/p/42?utm_source=news&utm_medium=email#top",
            "page": "Product 42", "refr": "https://www.google.com/search?q=x",
            "res": "1920x1080", "vp": "800x600", "lang": "en-GB", "cookie": "1",
            "dtm": str(NOW - 5_000), "stm": str(NOW - 1_000), **extra}


def test_page_view_maps_the_atomic_columns() -> None:
    out = to_enriched(page_view(), collector_ms=NOW, useragent="UA/1", ip="10.0.0.1")
    assert out["event"] == "page_view"
    assert (out["event_vendor"], out["event_name"], out["event_version"], out["event_format"]) == (
        "com.snowplowanalytics.snowplow", "page_view", "1-0-0", "jsonschema")
    assert out["event_id"] == EID
    assert (out["app_id"], out["platform"], out["v_tracker"]) == ("shop", "web", "py-1.1.0")
    assert (out["domain_userid"], out["domain_sessionid"], out["domain_sessionidx"]) == ("d-1", "s-1", 3)
    assert out["user_id"] == "u-1"
    assert out["page_title"] == "Product 42"
    assert (out["page_urlhost"], out["page_urlport"], out["page_urlpath"]) == ("shop.example.com", 8443, "/p/42")
    assert out["page_urlfragment"] == "top"
    assert (out["mkt_source"], out["mkt_medium"]) == ("news", "email")
    assert (out["refr_urlhost"], out["refr_urlport"]) == ("www.google.com", 443)
    assert (out["dvce_screenwidth"], out["dvce_screenheight"], out["br_viewwidth"]) == (1920, 1080, 800)
    assert out["br_cookies"] is True and out["br_lang"] == "en-GB"
    assert (out["useragent"], out["user_ipaddress"]) == ("UA/1", "10.0.0.1")
    assert out["collector_tstamp"] == "2026-01-01T12:00:00.000Z"
    assert out["dvce_created_tstamp"] == "2026-01-01T11:59:55.000Z"
    assert out["dvce_sent_tstamp"] == "2026-01-01T11:59:59.000Z"
    # collector - (sent - created) = 12:00:00 - 4 s
    assert out["derived_tstamp"] == "2026-01-01T11:59:56.000Z"
    assert "unstruct_event" not in out and "contexts" not in out


def test_output_is_accepted_by_the_worker_decoder() -> None:
    params = {"e": "ue", "eid": EID, "p": "web", "duid": "d-1", "dtm": str(NOW),
              "ue_px": b64url({"schema": "iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0",
                               "data": CART}),
              "cx": b64url({"schema": "iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-1",
                            "data": [USER_CTX]})}
    event = decode_snowplow_json(orjson.dumps(to_enriched(params, collector_ms=NOW)), now_ms=NOW)
    assert (event.vendor, event.name, event.version) == ("com.acme", "add_to_cart", "1-0-2")
    assert event.unstruct == CART
    assert list(event.contexts) == [USER_CTX]
    assert event.timestamp_ms == NOW
    assert event.atomic["event"] == "unstruct"


def test_plain_json_unstruct_and_contexts_and_struct_fields() -> None:
    params = {"e": "se", "eid": EID, "se_ca": "shop", "se_ac": "add", "se_la": "sku",
              "se_pr": "p", "se_va": "2.5",
              "co": orjson.dumps({"schema": "iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-0",
                                  "data": [USER_CTX]}).decode()}
    out = to_enriched(params, collector_ms=NOW)
    assert out["event"] == "struct" and out["event_vendor"] == "com.google.analytics"
    assert (out["se_category"], out["se_action"], out["se_label"], out["se_value"]) == ("shop", "add", "sku", 2.5)
    assert out["contexts"]["data"] == [USER_CTX]


@pytest.mark.parametrize(("created", "sent", "true", "expected"), [
    (None, None, None, NOW),
    (NOW - 10, None, None, NOW),            # no sent time: collector
    (NOW - 10, NOW - 4, None, NOW - 6),     # skew-corrected
    (NOW - 4, NOW - 10, None, NOW),         # created after sent: collector
    (NOW - 10, NOW - 4, NOW - 99, NOW - 99),  # true timestamp wins
])
def test_derived_timestamp_rule(created: int | None, sent: int | None, true: int | None,
                                expected: int) -> None:
    assert derived_tstamp_ms(NOW, created, sent, true) == expected


def test_timestamp_format_keeps_milliseconds() -> None:
    assert format_tstamp(NOW + 7) == "2026-01-01T12:00:00.007Z"


def test_missing_eid_gets_a_deterministic_uuid() -> None:
    params = {"e": "pv", "duid": "d-1", "url": "https://x.example/"}
    first = to_enriched(params, collector_ms=NOW)["event_id"]
    assert first == to_enriched(params, collector_ms=NOW + 1)["event_id"]
    assert first != to_enriched({**params, "duid": "d-2"}, collector_ms=NOW)["event_id"]


def test_anonymous_tracking_drops_ip_and_network_id() -> None:
    out = to_enriched({"e": "pv", "eid": EID}, collector_ms=NOW, ip="1.2.3.4",
                      network_userid="n-1", anonymous=True)
    assert "user_ipaddress" not in out
    assert out["network_userid"] == ANONYMOUS_NUID


def test_payload_network_user_id_wins_over_the_cookie() -> None:
    out = to_enriched({"e": "pv", "eid": EID, "tnuid": "n-payload"}, collector_ms=NOW,
                      network_userid="n-cookie")
    assert out["network_userid"] == "n-payload"


@pytest.mark.parametrize(("params", "reason"), [
    ({"eid": EID}, "unknown event type"),
    ({"e": "zz", "eid": EID}, "unknown event type"),
    ({"e": "pv", "eid": "not-a-uuid"}, "is not a UUID"),
    ({"e": "pv", "eid": EID, "p": "toaster"}, "unknown platform"),
    ({"e": "pv", "eid": EID, "dtm": "yesterday"}, "field dtm: invalid number"),
    ({"e": "se", "eid": EID, "se_va": "lots"}, "field se_va: invalid number"),
    ({"e": "pv", "eid": EID, "res": "1920"}, "expected WIDTHxHEIGHT"),
    ({"e": "ue", "eid": EID}, "needs ue_pr or ue_px"),
    ({"e": "ue", "eid": EID, "ue_px": "!!!"}, "not valid base64"),
    ({"e": "ue", "eid": EID, "ue_pr": "{nope"}, "not valid JSON"),
    ({"e": "ue", "eid": EID, "ue_pr": orjson.dumps(CART).decode()}, "unstruct_event schema"),
    ({"e": "ue", "eid": EID, "ue_pr": orjson.dumps({
        "schema": "iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0",
        "data": {"schema": "not-iglu", "data": {}}}).decode()}, "is not an Iglu URI"),
    ({"e": "pv", "eid": EID, "co": orjson.dumps({"schema": "iglu:x/contexts/jsonschema/1-0-0",
                                                 "data": [{"data": {}}]}).decode()}, "context 0"),
    ({"e": "pv", "eid": EID, "url": {"nested": 1}}, "must be a string"),
])
def test_bad_payloads_are_refused_with_a_reason(params: dict[str, object], reason: str) -> None:
    with pytest.raises(TrackerPayloadError) as err:
        to_enriched(params, collector_ms=NOW)
    assert reason in err.value.reason


@pytest.mark.parametrize(("body", "reason"), [
    ([], "self-describing"),
    ({"schema": "iglu:com.acme/x/jsonschema/1-0-0", "data": [{}]}, "schema must be"),
    ({"schema": "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4", "data": []}, "non-empty"),
    ({"schema": "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4", "data": [1]}, "data[0]"),
])
def test_post_envelope_is_checked(body: object, reason: str) -> None:
    with pytest.raises(TrackerPayloadError) as err:
        payloads_from_post(body)
    assert reason in err.value.reason


def test_post_envelope_returns_the_events() -> None:
    events = [{"e": "pv"}, {"e": "pp"}]
    body = {"schema": "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4", "data": events}
    assert payloads_from_post(body) == events
