"""Backfill through the real delivery worker: every current member of the segment arrives once
as ``enter`` (deterministic ids, profile fields included), only to the backfilled
subscription, with progress recorded; a restarted worker does not backfill again. The worker's
``/metrics`` endpoint counts the deliveries."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
from redis.asyncio import Redis

from processor import delivery_admin
from processor.domain.entity import EntityState
from processor.domain.segments import segment_id_for
from processor.domain.transitions import EntityRef
from processor.settings import Settings
from processor.state.entities import EntityStore
from processor.state.members import MemberIndex
from processor.streams.delivery import DeliveryWorker
from processor.streams.kafka import ensure_topics
from tests.integration.delivery.workload import run_delivery, subscribe
from tests.integration.test_worker import publish_demo
from tests.support.kafka_io import read_topic
from tests.support.receiver import WebhookReceiver
from tests.support.running import running, wait_loaded

pytestmark = pytest.mark.integration

MEMBERS = 1_200  # more than one SSCAN page in several shards
SEGMENT = segment_id_for("active_cart")


async def seed_members(settings: Settings) -> None:
    """Members in the index and their profiles in entity state, as the event worker leaves them."""
    redis = Redis.from_url(settings.redis_url)
    try:
        refs = [EntityRef("user_id", f"member-{i}") for i in range(MEMBERS)]
        states = []
        for i, ref in enumerate(refs):
            state = EntityState(ref)
            state.add_identifiers({"user_id": ref.id})
            state.set_profile("cart_items", i % 5 + 1, 1_000)
            state.set_member(SEGMENT, True)
            states.append(state)
        await EntityStore(redis).write(states)
        await MemberIndex(redis).apply((SEGMENT, ref, True) for ref in refs)
        outsider = EntityRef("user_id", "not-a-member")
        await MemberIndex(redis).apply([(SEGMENT, outsider, True), (SEGMENT, outsider, False)])
    finally:
        await redis.aclose()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return str(answer.read().decode())


def test_backfill_delivers_every_member_once_as_enter(settings: Settings) -> None:
    workers: list[DeliveryWorker] = []
    with WebhookReceiver() as backfilled, WebhookReceiver() as other:
        async def scenario() -> tuple[dict[str, str], str]:
            await ensure_topics(settings)
            await publish_demo(settings)
            await seed_members(settings)
            await subscribe(settings, "sub-other", other.url)
            await subscribe(settings, "sub-backfill", backfilled.url, withbackfill=True)
            async with running(lambda s: run_delivery(settings, s, metrics_port=0,
                                                      seen=workers.append)):
                await wait_loaded(settings)
                await asyncio.to_thread(backfilled.wait_for, MEMBERS, 60.0)
                await asyncio.sleep(1.5)  # a duplicate would arrive meanwhile
                port = workers[0].metrics_port
                assert port is not None
                metrics = await asyncio.to_thread(scrape, port)
            async with running(lambda s: run_delivery(settings, s)):  # restart: nothing again
                await wait_loaded(settings)
                await asyncio.sleep(2.0)
            redis = Redis.from_url(settings.redis_url)
            try:
                progress = await delivery_admin.backfill_status(redis, "sub-backfill")
            finally:
                await redis.aclose()
            return progress, metrics

        progress, metrics = asyncio.run(scenario())
        requests = backfilled.requests
        assert len(requests) == MEMBERS
        assert len({r.header("webhook-id") for r in requests}) == MEMBERS
        assert {r.json["id"] for r in requests} == {f"member-{i}" for i in range(MEMBERS)}
        for request in requests:
            body = request.json
            event = body["data"]["segment_events"][0]
            assert event["event"] == "enter" and event["slug"] == "active_cart"
            assert body["data"]["cart_items"] == int(body["id"].split("-")[1]) % 5 + 1
            assert body["meta"]["subscription_id"] == "sub-backfill"
        assert other.requests == []  # backfill is for the backfilled subscription only
        assert progress["state"] == "done" and progress["produced"] == str(MEMBERS)
        assert f'signalbox_delivery_delivered_total{{subscription="sub-backfill"}} {MEMBERS}.0' \
            in metrics


def test_a_finished_backfill_is_not_run_again(settings: Settings) -> None:
    from processor.domain.subscriptions import Subscription
    from processor.streams import kafka

    async def scenario() -> list[bool]:
        await ensure_topics(settings)
        await publish_demo(settings)
        await seed_members(settings)
        subscription = Subscription(id="sub-b", channel="kafka", topic="out",
                                    segment_ids=("active_cart",), withbackfill=True)
        redis = Redis.from_url(settings.redis_url)
        producer = kafka.producer(settings)
        await producer.start()
        try:
            first = await delivery_admin.backfill(redis, producer, settings, subscription,
                                                  owner="w1", page=100)
            again = await delivery_admin.backfill(redis, producer, settings, subscription,
                                                  owner="w2")
            progress = await delivery_admin.backfill_status(redis, "sub-b")
        finally:
            await producer.stop()
            await redis.aclose()
        assert progress["produced"] == str(MEMBERS)
        produced = await read_topic(settings, settings.transitions_topic, at_least=MEMBERS,
                                    settle=1.0)
        assert len(produced) == MEMBERS  # the second call produced nothing
        return [first, again]

    assert asyncio.run(scenario()) == [True, True]
