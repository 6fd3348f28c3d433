"""``Signals.test()`` (signals-api §1.10) through the official SDK: a draft attribute group,
never published, evaluated over the recent events of the real Kafka events topic."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import httpx
import orjson
import pandas as pd
import pytest
from snowplow_signals import (
    AtomicProperty,
    Attribute,
    AttributeKey,
    BatchAttributeGroup,
    BatchSource,
    PageView,
    SignalsAPIError,
    StreamAttributeGroup,
    domain_userid,
    user_id,
)

from processor.settings import Settings
from processor.streams.kafka import ensure_topics
from tests.integration.api.test_signals_profiles import now_ms, send
from tests.integration.api.test_signals_registry import OWNER, signals_api, snowplow_event
from tests.support.kafka_io import produce

pytestmark = pytest.mark.integration

COUNT = Attribute(name="count_page_views", type="int32", events=[PageView()], aggregation="counter")
LAST_URL = Attribute(name="last_url", type="string", events=[], aggregation="last",
                     property=AtomicProperty(name="page_url"))  # fmt: skip


def draft(*attributes: Attribute, key: AttributeKey = domain_userid) -> StreamAttributeGroup:
    return StreamAttributeGroup(name="draft", version=1, attribute_key=key, owner=OWNER,
                                attributes=list(attributes) or [COUNT, LAST_URL])  # fmt: skip


def test_sdk_test_counts_recent_events(settings: Settings) -> None:
    """Ids given: one row each in request order; app_ids and the window filter the events;
    nothing is stored in the registry."""
    a, b, stranger = (uuid.uuid4().hex for _ in range(3))
    asyncio.run(ensure_topics(settings))
    t = now_ms() - 60_000
    send(settings, [
        snowplow_event(a, t, page_url="https://x/1"),
        snowplow_event(a, t + 1, page_url="https://x/2"),
        snowplow_event(a, t + 2, name="page_ping", page_url="https://x/ping"),
        snowplow_event(b, t + 3, page_url="https://x/b"),
        snowplow_event(b, t + 4, page_url="https://x/other-app", app_id="mobile"),
        snowplow_event(a, t - 3 * 3_600_000, page_url="https://x/old"),  # outside a 2h window
    ])  # fmt: skip
    with signals_api(settings) as api:
        df = api.sdk.test(attribute_group=draft(), attribute_key_ids=[b, stranger, a],
                          app_ids=["web"], window=timedelta(hours=2))  # fmt: skip
        assert list(df.columns) == ["domain_userid", "count_page_views", "last_url"]
        rows = df.to_dict(orient="records")
        assert rows[0] == {"domain_userid": b, "count_page_views": 1, "last_url": "https://x/b"}
        assert rows[1]["domain_userid"] == stranger and pd.isna(rows[1]["count_page_views"])
        assert rows[2] == {"domain_userid": a, "count_page_views": 2, "last_url": "https://x/ping"}
        every_app = api.sdk.test(attribute_group=draft(), attribute_key_ids=[b], window=timedelta(hours=2))
        assert every_app.to_dict(orient="records") == [
            {"domain_userid": b, "count_page_views": 2, "last_url": "https://x/other-app"}]  # fmt: skip
        assert api.http("GET", "/api/v1/registry/attribute_groups/").json() == []


def test_sdk_test_samples_recent_ids_and_reads_generic_streams(settings: Settings) -> None:
    """No ids: the most recently active ones (10 at most, ``?limit`` for another count);
    records with a generic ``stream`` header are decoded as the worker would."""
    asyncio.run(ensure_topics(settings))
    t = now_ms() - 120_000
    ids = [f"u{i:02d}" for i in range(12)]
    send(settings, [snowplow_event(duid, t + i) for i, duid in enumerate(ids)])
    generic = [orjson.dumps({"user_id": "shopper", "event": "buy", "ts": t + i}) for i in range(3)]
    asyncio.run(produce(settings, generic, stream="shop"))
    with signals_api(settings) as api:
        sample = api.sdk.test(attribute_group=draft(COUNT))
        assert list(sample["domain_userid"]) == ids[::-1][:10]
        assert set(sample["count_page_views"]) == {1}
        body = {"attribute_group": draft(COUNT).model_dump(mode="json", exclude_none=True),
                "app_ids": [], "attribute_key_ids": []}  # fmt: skip
        three = api.http("POST", "/api/v1/testing/attribute_groups/?limit=3", json=body)
        assert three.status_code == 200 and [r["domain_userid"] for r in three.json()] == ids[::-1][:3]
        buys = Attribute(name="buys", type="int32", events=[], aggregation="counter")
        by_user = api.sdk.test(attribute_group=draft(buys, key=user_id))
        assert by_user.to_dict(orient="records") == [{"user_id": "shopper", "buys": 3}]


def test_sdk_test_batch_source_and_errors(settings: Settings) -> None:
    """The SDK sends a batch source as ``schema_``: accepted. A group that cannot run, a bad
    id or an unknown custom key -> 422, surfaced by the SDK as ``SignalsAPIError``."""
    asyncio.run(ensure_topics(settings))
    with signals_api(settings) as api:
        batch = BatchAttributeGroup(
            name="draft_batch", version=1, attribute_key=domain_userid, owner=OWNER,
            attributes=[COUNT], batch_source=BatchSource(
                name="src", timestamp_field="ts", database="db", schema="atomic", table="events"),
        )  # fmt: skip
        assert api.sdk.test(attribute_group=batch).empty
        bad = draft(Attribute(name="since", type="double", events=[], aggregation="time_since_last",
                              time_unit="s", period=timedelta(hours=1), ttl=timedelta(hours=1)))  # fmt: skip
        with pytest.raises(SignalsAPIError) as refused:
            api.sdk.test(attribute_group=bad)
        assert refused.value.status_code == 422
        body = {"attribute_group": draft().model_dump(mode="json", exclude_none=True),
                "attribute_key_ids": ["not an id!"]}  # fmt: skip
        assert api.http("POST", "/api/v1/testing/attribute_groups/", json=body).status_code == 422
        unknown = draft(key=AttributeKey(name="nope"))
        doc = unknown.model_dump(mode="json", exclude_none=True)
        doc["attribute_key"] = {"name": "nope"}
        response = api.http("POST", "/api/v1/testing/attribute_groups/", json={"attribute_group": doc})
        assert response.status_code == 422 and "nope" in response.json()["detail"]
        no_token = httpx.post(f"{api.url}/api/v1/testing/attribute_groups/", json={}, timeout=10)
        assert no_token.status_code == 401
