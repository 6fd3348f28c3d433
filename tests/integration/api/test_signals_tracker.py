"""Both official clients end to end: the Python `snowplow-tracker` sends page views and a page
ping to Signalbox's collector, the worker computes, and the `snowplow-signals` SDK reads the
attributes back (signals-api §4 scenarios 1, 2 and 5 over the real ingestion path)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from snowplow_signals import (
    AtomicProperty,
    Attribute,
    Criteria,
    Criterion,
    PagePing,
    PageView,
    Service,
)
from snowplow_tracker import Emitter, Subject, Tracker
from snowplow_tracker import PagePing as TrackedPing
from snowplow_tracker import PageView as TrackedView

from processor.settings import Settings
from tests.integration.api.test_signals_profiles import eventually, start_worker
from tests.integration.api.test_signals_registry import OWNER, signals_api, user_stats
from tests.support.running import wait_loaded

pytestmark = pytest.mark.integration


def track(url: str, duid: str) -> None:
    failures: list[object] = []
    emitter = Emitter(url, method="post", batch_size=10,  # type: ignore[arg-type]
                      on_failure=lambda sent, unsent: failures.append(unsent))
    tracker = Tracker("t1", emitter, subject=Subject().set_domain_user_id(duid), app_id="shop")
    for page in ("/", "/pricing", "/pricing"):
        tracker.track(TrackedView(page_url=f"https://shop.example.com{page}"))
    tracker.track(TrackedPing(page_url="https://shop.example.com/pricing"))
    tracker.flush()
    assert not failures, f"the collector refused events: {failures}"


def test_tracker_to_collector_to_sdk_reads(settings: Settings) -> None:
    duid, stranger = str(uuid.uuid4()), str(uuid.uuid4())
    pricing = Attribute(
        name="pricing_views", type="int32", events=[PageView()], aggregation="counter",
        criteria=Criteria(all=[Criterion.like(AtomicProperty(name="page_url"), "%pricing%")]))  # fmt: skip
    pings = Attribute(name="pings", type="int32", events=[PagePing()], aggregation="counter",
                      period=timedelta(days=1))
    group = user_stats(1, *[
        Attribute(name="page_views_7d", type="int32", events=[PageView()], aggregation="counter",
                  period=timedelta(days=7)), pricing, pings])  # fmt: skip
    with signals_api(settings) as api, start_worker(settings):
        api.sdk.publish([group, Service(name="svc", attribute_groups=[group], owner=OWNER)])
        asyncio.run(wait_loaded(settings))
        track(api.url, duid)
        read = lambda: api.sdk.get_service_attributes(  # noqa: E731
            name="svc", attribute_key="domain_userid", identifier=duid)
        values = eventually(read, lambda v: v.get("pings") == 1)
        assert values == {"domain_userid": duid, "page_views_7d": 3, "pricing_views": 2, "pings": 1}
        unknown = api.sdk.get_service_attributes(name="svc", attribute_key="domain_userid",
                                                 identifier=stranger)
        assert unknown == {"domain_userid": stranger, "page_views_7d": None, "pricing_views": None,
                           "pings": None}
