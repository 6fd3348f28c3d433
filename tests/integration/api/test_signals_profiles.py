"""Profiles Store reads through the official SDK, with events flowing through real Kafka and an
``EventWorker`` into Redis (signals-api §4 scenarios 1, 2, 5, 6, 7, 8), plus the read errors of
§1.7 and the event-log read of §1.9."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import orjson
import pytest
from snowplow_signals import (
    AtomicProperty,
    Attribute,
    AttributeKey,
    Criteria,
    Criterion,
    EntityProperty,
    Event,
    EventLog,
    EventLogAtomicProperty,
    EventLogEvent,
    EventProperty,
    EventSelection,
    PageView,
    Service,
    SignalsAPIError,
    StreamAttributeGroup,
    domain_sessionid,
    domain_userid,
)

from processor.settings import Settings
from processor.streams.kafka import ensure_topics
from tests.integration.api.test_signals_registry import (
    OWNER,
    WorkerThread,
    page_views,
    signals_api,
    snowplow_event,
    user_stats,
)
from tests.support.kafka_io import produce
from tests.support.running import wait_loaded

pytestmark = pytest.mark.integration

ECOM = "com.snowplowanalytics.snowplow.ecommerce"
ACTION = Event(vendor=ECOM, name="snowplow_ecommerce_action", version="1-0-2")
ACTION_TYPE = EventProperty(vendor=ECOM, name="snowplow_ecommerce_action", major_version=1, path="type")
PRICE = EntityProperty(vendor=ECOM, name="product", major_version=1, path="price", index=0)
URL = AtomicProperty(name="page_url")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def send(settings: Settings, events: list[bytes]) -> None:
    asyncio.run(produce(settings, events, keys=[orjson.loads(e)["domain_userid"].encode() for e in events]))


def start_worker(settings: Settings) -> WorkerThread:
    asyncio.run(ensure_topics(settings))
    return WorkerThread(settings)


def eventually(read: Callable[[], Any], expected: Callable[[Any], bool], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if expected(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def cart_action(duid: str, ts: int, kind: str, price: float) -> bytes:
    return snowplow_event(
        duid, ts, name="snowplow_ecommerce_action", vendor=ECOM, version="1-0-2",
        unstruct_event={"schema": "iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0",
                        "data": {"schema": f"iglu:{ECOM}/snowplow_ecommerce_action/jsonschema/1-0-2",
                                 "data": {"type": kind}}},
        contexts={"schema": "iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-0",
                  "data": [{"schema": f"iglu:{ECOM}/product/jsonschema/1-0-0",
                            "data": {"id": "p1", "name": "Foo", "price": price}}]},
    )  # fmt: skip


def test_counter_service_and_unknown_ids(settings: Settings) -> None:
    """Scenarios 1 and 2: 3 page views + 1 page ping count 3; a service reads every pinned
    attribute; a never-seen id reads the key echo and None (a list [null] on the wire)."""
    duid, stranger = str(uuid.uuid4()), str(uuid.uuid4())
    with signals_api(settings) as api, start_worker(settings):
        group = user_stats()
        api.sdk.publish([group, Service(name="svc", attribute_groups=[group], owner=OWNER)])
        asyncio.run(wait_loaded(settings))
        t = now_ms() - 60_000
        send(settings, [snowplow_event(duid, t + i) for i in range(3)]
             + [snowplow_event(duid, t + 5, name="page_ping")])  # fmt: skip
        read = lambda: api.sdk.get_group_attributes(  # noqa: E731
            name="user_stats", version=1, attributes=["page_views_7d"],
            attribute_key="domain_userid", identifier=duid)  # fmt: skip
        assert eventually(read, lambda v: v.get("page_views_7d") == 3) == {
            "domain_userid": duid, "page_views_7d": 3}  # fmt: skip
        service = api.sdk.get_service_attributes(name="svc", attribute_key="domain_userid", identifier=duid)
        assert service == {"domain_userid": duid, "page_views_7d": 3}
        unknown = api.http("POST", "/api/v1/get-online-attributes", json={
            "attribute_keys": {"domain_userid": [stranger, duid]}, "service": "svc"}).json()  # fmt: skip
        assert unknown == {"domain_userid": [stranger, duid], "page_views_7d": [None, 3]}
        full = api.http("POST", "/api/v1/get-online-attributes", json={
            "attribute_keys": {"domain_userid": [duid]}, "attributes": ["user_stats_v1:page_views_7d"],
            "full_attribute_names": True}).json()  # fmt: skip
        assert full == {"domain_userid": [duid], "user_stats_v1:page_views_7d": [3]}


def test_read_errors(settings: Settings) -> None:
    """§1.7 errors: unpublished or unknown group -> 422 {"detail": {"missing": ...}}; more
    than 100 ids -> 422; unknown service -> 404."""
    with signals_api(settings) as api:
        api.sdk.publish([user_stats()])
        api.sdk.unpublish([user_stats()])
        body = {"attribute_keys": {"domain_userid": ["a"]},
                "attributes": ["user_stats_v1:page_views_7d", "nope_v1:x"]}  # fmt: skip
        response = api.http("POST", "/api/v1/get-online-attributes", json=body)
        assert response.status_code == 422
        assert response.json() == {"detail": {"missing": ["user_stats_v1:page_views_7d", "nope_v1:x"]}}
        with pytest.raises(SignalsAPIError) as unknown:
            api.sdk.get_service_attributes(name="nope", attribute_key="domain_userid", identifier="a")
        assert unknown.value.status_code == 404
        api.sdk.publish([user_stats()])
        many = {"attribute_keys": {"domain_userid": [str(i) for i in range(101)]},
                "attributes": ["user_stats_v1:page_views_7d"]}  # fmt: skip
        assert api.http("POST", "/api/v1/get-online-attributes", json=many).status_code == 422
        many["attribute_keys"] = {"domain_userid": [str(i) for i in range(100)]}
        ok = api.http("POST", "/api/v1/get-online-attributes", json=many)
        assert ok.status_code == 200 and ok.json()["page_views_7d"] == [None] * 100


def _rich_group() -> StreamAttributeGroup:
    """Scenarios 5 and 6 in one group: filters, value aggregations, ordering."""
    return StreamAttributeGroup(name="shop", version=1, attribute_key=domain_userid, owner=OWNER, attributes=[
        Attribute(name="pricing_views", type="int32", events=[PageView()], aggregation="counter",
                  criteria=Criteria(any=[Criterion.like(URL, "%pricing%")])),
        Attribute(name="listed_views", type="int32", events=[PageView()], aggregation="counter",
                  criteria=Criteria(all=[Criterion.in_list(URL, ["/a", "/b"])])),
        Attribute(name="titled_views", type="int32", events=[PageView()], aggregation="counter",
                  criteria=Criteria(all=[Criterion.is_not_null(AtomicProperty(name="page_title"))])),
        Attribute(name="adds", type="int32", events=[ACTION], aggregation="counter",
                  criteria=Criteria(all=[Criterion.eq(ACTION_TYPE, "add_to_cart")])),
        Attribute(name="cart_total", type="double", events=[ACTION], aggregation="sum", property=PRICE,
                  criteria=Criteria(all=[Criterion.eq(ACTION_TYPE, "add_to_cart")])),
        Attribute(name="min_price", type="double", events=[ACTION], aggregation="min", property=PRICE),
        Attribute(name="max_price", type="double", events=[ACTION], aggregation="max", property=PRICE),
        Attribute(name="mean_price", type="double", events=[ACTION], aggregation="mean", property=PRICE),
        Attribute(name="first_url", type="string", events=[PageView()], aggregation="first", property=URL),
        Attribute(name="last_url", type="string", events=[PageView()], aggregation="last", property=URL),
        Attribute(name="urls", type="string_list", events=[PageView()], aggregation="unique_list", property=URL),
        Attribute(name="peak_hour", type="int32", events=[PageView()], aggregation="most_frequent",
                  property=AtomicProperty(name="derived_tstamp", date_part="hour_of_day")),
        Attribute(name="url_counts", type="dict", events=[PageView()], aggregation="category_count", property=URL),
        Attribute(name="distinct_urls", type="int64", events=[PageView()], aggregation="approx_count_distinct",
                  property=URL),
        Attribute(name="mins_since_pv", type="double", events=[PageView()], aggregation="time_since_last",
                  time_unit="min"),
        Attribute(name="views_10m", type="int32", events=[PageView()], aggregation="counter",
                  period=timedelta(minutes=10)),
        Attribute(name="last_title", type="string", events=[PageView()], aggregation="last",
                  property=AtomicProperty(name="page_title"), ttl=timedelta(seconds=3)),
    ])  # fmt: skip


def test_aggregations_filters_windows_and_custom_keys(settings: Settings) -> None:
    """Scenarios 5-8: criteria filters, value aggregations with out-of-order arrival, a 10 min
    window and a TTL, and groups keyed on custom (atomic and entity) attribute keys."""
    duid = str(uuid.uuid4())
    app_key = AttributeKey(name="app_key", property=AtomicProperty(name="app_id"))
    account = AttributeKey(property=EntityProperty(vendor="com.acme", name="user", major_version=1, path="account_id"))
    keyed = [StreamAttributeGroup(name=f"by_{k.name}", version=1, attribute_key=k, owner=OWNER,
                                  attributes=[page_views("views")]) for k in (app_key, account)]  # fmt: skip
    with signals_api(settings) as api, start_worker(settings):
        api.sdk.publish([app_key, _rich_group(), *keyed])
        asyncio.run(wait_loaded(settings))
        t = now_ms() - 20 * 60_000
        hour = time.gmtime(t // 1000).tm_hour
        acme = {"schema": "iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-0",
                "data": [{"schema": "iglu:com.acme/user/jsonschema/1-0-0", "data": {"account_id": "acc-9"}}]}  # fmt: skip
        send(settings, [
            snowplow_event(duid, t + 3000, page_url="/pricing", page_title="Pricing", app_id="shop", contexts=acme),
            snowplow_event(duid, t + 1000, page_url="/a", app_id="shop"),  # earlier, arrives later
            snowplow_event(duid, t + 2000, page_url="/b", page_title="B"),
            snowplow_event(duid, t + 4000, page_url="/a"),
            cart_action(duid, t + 5000, "add_to_cart", 10.0),
            cart_action(duid, t + 6000, "add_to_cart", 30.0),
            cart_action(duid, t + 7000, "remove_from_cart", 2.0),
            snowplow_event(duid, now_ms() - 1000, page_url="/recent", page_title="Now"),
        ])  # fmt: skip
        read = lambda: api.sdk.get_group_attributes(  # noqa: E731
            name="shop", version=1, attributes=[a.name for a in _rich_group().attributes],
            attribute_key="domain_userid", identifier=duid)  # fmt: skip
        got = eventually(read, lambda v: v.get("views_10m") == 1 and v.get("adds") == 2)
        assert got["pricing_views"] == 1 and got["listed_views"] == 3 and got["titled_views"] == 3
        assert got["adds"] == 2 and got["cart_total"] == 40.0
        assert (got["min_price"], got["max_price"], got["mean_price"]) == (2.0, 30.0, 14.0)
        assert (got["first_url"], got["last_url"]) == ("/a", "/recent")
        assert got["urls"] == ["/b", "/pricing", "/a", "/recent"]
        assert got["peak_hour"] == hour or got["peak_hour"] == time.gmtime(time.time()).tm_hour
        assert got["url_counts"] == {"/a": 2, "/pricing": 1, "/b": 1, "/recent": 1}
        assert got["distinct_urls"] == 4
        assert 0 <= got["mins_since_pv"] < 1.0
        assert got["views_10m"] == 1  # the four page views 20 minutes ago are out of the window
        assert got["last_title"] == "Now"
        time.sleep(1.5)
        later = read()
        assert later["mins_since_pv"] > got["mins_since_pv"]
        assert eventually(read, lambda v: v["last_title"] is None, timeout=5)["last_title"] is None
        send(settings, [snowplow_event(duid, now_ms(), page_url="/again", page_title="Back")])
        assert eventually(read, lambda v: v["last_title"] == "Back")["last_title"] == "Back"
        by_app = api.sdk.get_group_attributes(name="by_app_key", version=1, attributes=["views"],
                                              attribute_key="app_key", identifier="shop")  # fmt: skip
        assert by_app == {"app_key": "shop", "views": 2}
        by_account = api.sdk.get_group_attributes(name="by_account_id", version=1, attributes=["views"],
                                                  attribute_key="account_id", identifier="acc-9")  # fmt: skip
        assert by_account == {"account_id": "acc-9", "views": 1}


def test_event_log_registry_and_read(settings: Settings) -> None:
    """Scenario 14: §1.5 registry + engines calls through the SDK; five page views in a session
    flow through the worker, and the §1.9 read returns the last three, oldest first (the
    page ping is not selected)."""
    session = str(uuid.uuid4())
    ctx = EventLog(name="ctx", attribute_key=domain_sessionid, max_events=3, max_age_seconds=1800,
                   prompt="be nice", events=[EventSelection(
                       event=EventLogEvent(name="page_view", vendor="com.snowplowanalytics.snowplow", version="1-0-0"),
                       properties=[EventLogAtomicProperty(name="page_url")])])  # fmt: skip
    with signals_api(settings) as api, start_worker(settings):
        (published,) = api.sdk.publish([ctx])
        assert published.is_published
        stored = api.sdk.get_event_log("ctx")
        assert stored.is_published and stored.has_published_version
        with pytest.raises(SignalsAPIError) as refused:
            api.sdk.delete([ctx])
        assert refused.value.status_code == 409
        asyncio.run(wait_loaded(settings))
        t = now_ms() - 60_000
        send(settings, [snowplow_event(str(uuid.uuid4()), t + i * 1000, domain_sessionid=session,
                                       page_url=f"/p{i}") for i in range(5)]
             + [snowplow_event(str(uuid.uuid4()), t + 9000, name="page_ping",
                               domain_sessionid=session, page_url="/ping")])  # fmt: skip
        read = lambda: api.sdk.get_agentic_context(name="ctx", identifier=session)  # noqa: E731
        context = eventually(read, lambda c: [e["page_url"] for e in c.events] == ["/p2", "/p3", "/p4"])
        assert [e["page_url"] for e in context.events] == ["/p2", "/p3", "/p4"]
        assert context.prompt == "be nice" and context.attribute_key == "domain_sessionid"
        assert "last 3 recorded events" in context.summary and context.started_at_ms > 0
        text = api.sdk.get_agentic_context(name="ctx", identifier=session, format="narrative")
        assert text.startswith("[START CONTEXT]") and "/p4" in text and "/p1" not in text
        empty = api.sdk.get_agentic_context(name="ctx", identifier="no-such-session")
        assert empty.events == []
        api.sdk.unpublish([ctx])
        assert api.sdk.get_event_log("ctx").is_published is False
        api.sdk.delete([ctx])
        with pytest.raises(SignalsAPIError):
            api.sdk.get_event_log("ctx")
