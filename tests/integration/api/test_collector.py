"""The Snowplow collector endpoints, driven by the official ``snowplow_tracker`` package over
real HTTP, with real Kafka and Redis: what reaches the events topic, and that the worker
decodes it (counts it, dead-letters nothing)."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient
from redis.asyncio import Redis
from snowplow_tracker import Emitter, PageView, SelfDescribing, SelfDescribingJson, Subject, Tracker

from processor.api.app import create_app
from processor.api.collector import PIXEL
from processor.domain.transitions import EntityRef
from processor.publishing import publish_attribute_group
from processor.settings import Settings
from processor.state.registry import Registry
from processor.streams.kafka import ensure_topics
from tests.support.kafka_io import read_topic
from tests.support.running import run_worker, running, served, wait_loaded
from tests.support.state import counter

pytestmark = pytest.mark.integration

CART = "iglu:com.acme/add_to_cart/jsonschema/1-0-0"
PAYLOAD = "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4"
VISITS_GROUP = {
    "name": "visits", "version": 1, "is_published": True, "owner": "t@example.com",
    "attribute_key": {"name": "domain_userid"},
    "attributes": [
        {"name": "events", "type": "int64", "aggregation": "counter", "events": []},
        {"name": "carts", "type": "int64", "aggregation": "counter",
         "events": [{"vendor": "com.acme", "name": "add_to_cart"}]},
    ],
}




def track_with_official_tracker(url: str, method: str) -> list[str]:
    failures: list[object] = []
    emitter = Emitter(url, method=method, batch_size=10,  # type: ignore[arg-type]
                      on_failure=lambda sent, unsent: failures.append(unsent))
    subject = Subject().set_domain_user_id("duid-1").set_user_id("alice").set_platform("web")
    tracker = Tracker("t1", emitter, subject=subject, app_id="shop")
    ids = [
        tracker.track(PageView(page_url="https://shop.example.com/p/1?utm_source=ad", page_title="P1")),
        tracker.track(SelfDescribing(
            SelfDescribingJson(CART, {"sku": "A1", "qty": 2}),
            context=[SelfDescribingJson("iglu:com.acme/user/jsonschema/1-0-0", {"tier": "gold"})])),
    ]
    tracker.flush()
    assert not failures, f"collector refused events: {failures}"
    return [str(i) for i in ids]


async def count_of(settings: Settings, duid: str, attribute: str) -> int | None:
    return await counter(settings, EntityRef("domain_userid", duid), "visits", attribute)




@pytest.mark.parametrize("method", ["post", "get"])
def test_official_tracker_events_reach_the_topic_and_the_worker(settings: Settings, method: str) -> None:
    asyncio.run(ensure_topics(settings))
    with served(settings) as url:
        ids = track_with_official_tracker(url, method)

    records = asyncio.run(read_topic(settings, settings.events_topic, at_least=2, settle=0.5))
    assert len(records) == 2
    docs = [orjson.loads(r.value) for r in records]
    assert sorted(d["event_id"] for d in docs) == sorted(ids)
    for record in records:
        assert record.key == b"domain_userid:duid-1"
        assert dict(record.headers)["stream"] == b"snowplow"
    by_event = {d["event"]: d for d in docs}
    pv, ue = by_event["page_view"], by_event["unstruct"]
    assert (pv["app_id"], pv["platform"], pv["user_id"], pv["page_title"]) == ("shop", "web", "alice", "P1")
    assert pv["page_urlpath"] == "/p/1" and pv["mkt_source"] == "ad"
    assert pv["v_tracker"].startswith("py-")
    assert {"collector_tstamp", "dvce_created_tstamp", "derived_tstamp"} <= pv.keys()
    assert (ue["event_vendor"], ue["event_name"], ue["event_version"]) == ("com.acme", "add_to_cart", "1-0-0")
    assert ue["unstruct_event"]["data"] == {"schema": CART, "data": {"sku": "A1", "qty": 2}}
    assert ue["contexts"]["data"] == [{"schema": "iglu:com.acme/user/jsonschema/1-0-0", "data": {"tier": "gold"}}]

    async def worker_side() -> None:
        redis = Redis.from_url(settings.redis_url)
        try:
            await publish_attribute_group(Registry(redis), VISITS_GROUP)
        finally:
            await redis.aclose()
        async with running(lambda stop: run_worker(settings, stop)):
            await wait_loaded(settings)
            deadline = time.monotonic() + 30
            while await count_of(settings, "duid-1", "events") != 2:
                assert time.monotonic() < deadline, "worker did not count the tracked events"
                await asyncio.sleep(0.1)
        assert await count_of(settings, "duid-1", "carts") == 1
        dead = await read_topic(settings, settings.events_dlq_topic, at_least=0, timeout=2)
        assert dead == []

    asyncio.run(worker_side())


def tp2(*events: dict[str, object]) -> bytes:
    return orjson.dumps({"schema": PAYLOAD, "data": list(events)})


def test_a_bad_event_refuses_the_whole_request_and_nothing_is_produced(settings: Settings) -> None:
    asyncio.run(ensure_topics(settings))
    good = {"e": "pv", "eid": "0b9a7f0e-5f38-4d0c-9a3a-1d2e3f4a5b6c", "duid": "d-ok", "p": "web"}
    with TestClient(create_app(settings)) as client:
        bad = client.post("/com.snowplowanalytics.snowplow/tp2",
                          content=tp2(good, {"e": "pv", "eid": "nope"}))
        assert bad.status_code == 400
        assert bad.text == "event 1: eid 'nope' is not a UUID"
        assert client.post("/com.snowplowanalytics.snowplow/tp2", content=b"{oops").status_code == 400
        assert client.post("/com.snowplowanalytics.snowplow/tp2",
                           content=orjson.dumps({"schema": "iglu:x/y/jsonschema/1-0-0", "data": [good]})
                           ).status_code == 400
        pixel = client.get("/i", params={"e": "pv", "tv": "js-3"})  # eid optional, e required
        assert pixel.status_code == 200
        assert client.get("/i", params={"e": "zz"}).status_code == 400
        ok = client.post("/com.snowplowanalytics.snowplow/tp2", content=tp2(good),
                         headers={"Content-Type": "application/json; charset=UTF-8"})
        assert (ok.status_code, ok.text) == (200, "ok")
    assert pixel.content == PIXEL and pixel.headers["content-type"] == "image/gif"
    records = asyncio.run(read_topic(settings, settings.events_topic, at_least=2, settle=1.0))
    assert sorted(orjson.loads(r.value).get("domain_userid", "-") for r in records) == ["-", "d-ok"]


def test_oversized_body_is_413(settings: Settings) -> None:
    small = settings.model_copy(update={"api_max_body_bytes": 2048})
    event = {"e": "pv", "eid": "0b9a7f0e-5f38-4d0c-9a3a-1d2e3f4a5b6c", "page": "x" * 4000}
    with TestClient(create_app(small)) as client:
        declared = client.post("/com.snowplowanalytics.snowplow/tp2", content=tp2(event))
        streamed = client.post("/com.snowplowanalytics.snowplow/tp2",
                               content=iter([tp2(event)[:1500], tp2(event)[1500:]]))
    assert declared.status_code == 413 and "2048" in declared.text
    assert streamed.status_code == 413


def test_cors_for_browser_trackers(settings: Settings) -> None:
    origin = "https://shop.example.com"
    preflight_headers = {"Origin": origin, "Access-Control-Request-Method": "POST",
                         "Access-Control-Request-Headers": "content-type"}
    with TestClient(create_app(settings)) as client:
        pre = client.options("/com.snowplowanalytics.snowplow/tp2", headers=preflight_headers)
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == origin
    assert pre.headers["access-control-allow-credentials"] == "true"
    assert "POST" in pre.headers["access-control-allow-methods"]
    assert pre.headers["access-control-allow-headers"] == "content-type"

    listed = settings.model_copy(update={"cors_origins": "https://a.example, https://b.example"})
    with TestClient(create_app(listed)) as client:
        allowed = client.post("/com.snowplowanalytics.snowplow/tp2", content=b"{}",
                              headers={"Origin": "https://b.example"})
        denied = client.options("/i", headers={**preflight_headers, "Origin": "https://evil.example"})
    assert allowed.status_code == 400  # bad payload, but the browser may read why
    assert allowed.headers["access-control-allow-origin"] == "https://b.example"
    assert "access-control-allow-origin" not in denied.headers


def test_collector_needs_no_token(settings: Settings) -> None:
    """Public by design (see processor.api.collector); a token is neither needed nor checked."""
    asyncio.run(ensure_topics(settings))
    with served(settings) as url:
        response = httpx.get(f"{url}/i", params={"e": "pv", "duid": "d-anon"})
    assert response.status_code == 200
