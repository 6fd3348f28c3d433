"""The event worker through real Kafka and Redis: transitions, dead letters, replays."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from redis.asyncio import Redis

from processor.domain.transitions import EntityRef, Transition
from processor.publishing import publish_attribute_group, publish_segment
from processor.settings import Settings
from processor.state.registry import Registry
from processor.streams.kafka import ensure_topics
from processor.streams.worker import EventWorker
from tests.support.kafka_io import produce, read_topic
from tests.support.running import run_worker, running, wait_loaded
from tests.support.state import counter

pytestmark = pytest.mark.integration

COUNTER_GROUP = {
    "name": "shopper_stats", "version": 1, "is_published": True, "owner": "t@example.com",
    "attribute_key": {"name": "user_id"},
    "attributes": [{"name": "cart_events", "type": "int64", "aggregation": "counter", "events": []}],
}


def event(user: str, **fields: object) -> bytes:
    return orjson.dumps({"user_id": user, **fields})


async def publish_demo(settings: Settings) -> None:
    redis = Redis.from_url(settings.redis_url)
    try:
        registry = Registry(redis)
        await publish_attribute_group(registry, COUNTER_GROUP)
        await publish_segment(registry, {"segment_ql": "FILTER cart_items > 0 ALIAS active_cart"})
    finally:
        await redis.aclose()


async def counter_of(settings: Settings, user: str) -> int | None:
    return await counter(settings, EntityRef("user_id", user), "shopper_stats", "cart_events")




def test_enter_then_exit_and_dead_letter(settings: Settings) -> None:
    async def scenario() -> None:
        await ensure_topics(settings)
        await publish_demo(settings)
        async with running(lambda stop: run_worker(settings, stop)):
            await wait_loaded(settings)
            await produce(settings, [
                event("u1", cart_items=1),
                b"{not json",
                event("u1", cart_items=3),
                event("u1", cart_items=0),
            ], keys=[b"u1"] * 4)
            records = await read_topic(settings, settings.transitions_topic, at_least=2, settle=1.0)
            dead = await read_topic(settings, settings.events_dlq_topic, at_least=1)
        transitions = [Transition.from_json(r.value) for r in records]
        assert [(t.entity, t.segment_slug, t.event) for t in transitions] == [
            (EntityRef("user_id", "u1"), "active_cart", "enter"),
            (EntityRef("user_id", "u1"), "active_cart", "exit"),
        ]
        assert transitions[0].profile["cart_items"] == 1
        assert len(dead) == 1 and dead[0].value == b"{not json"
        reason = dict(dead[0].headers)["reason"].decode()
        assert "JSON" in reason or "json" in reason
        assert await counter_of(settings, "u1") == 3

    asyncio.run(scenario())


def test_replayed_events_are_not_applied_twice(settings: Settings) -> None:
    async def scenario() -> None:
        await ensure_topics(settings)
        await publish_demo(settings)
        values = [event(f"u{i % 5}", cart_items=(i // 5) % 2) for i in range(50)]
        await produce(settings, values, keys=[f"u{i % 5}".encode() for i in range(50)])
        # each user sees cart_items 0,1,0,1,... : 5 enters and 4 exits
        expected = 5 * 9
        async with running(lambda stop: run_worker(settings, stop)):
            await wait_loaded(settings)
            first = await read_topic(settings, settings.transitions_topic, at_least=expected,
                                     settle=1.0)
        # A new consumer group starts from the beginning: every event is delivered again.
        replay = settings.model_copy(update={"worker_group": settings.worker_group + "-replay"})
        async with running(lambda stop: run_worker(replay, stop)):
            await wait_loaded(settings)
            await asyncio.sleep(2.0)  # give the replay time to (wrongly) apply anything
            again = await read_topic(settings, settings.transitions_topic, at_least=len(first),
                                     settle=1.0)
        assert len(again) == len(first) == expected
        for user in range(5):
            assert await counter_of(settings, f"u{user}") == 10

    asyncio.run(scenario())


def test_events_later_than_the_allowed_lateness_are_counted_and_dropped(settings: Settings) -> None:
    settings = settings.model_copy(update={"allowed_lateness_ms": 60_000})

    async def scenario() -> dict[str, int]:
        await ensure_topics(settings)
        await publish_demo(settings)
        redis = Redis.from_url(settings.redis_url)
        worker = EventWorker(settings, redis)
        try:
            async with running(worker.run):
                await wait_loaded(settings)
                now = int(time.time() * 1000)
                await produce(settings, [
                    orjson.dumps({"user_id": "late", "ts": now - 7_200_000, "cart_items": 1}),
                    orjson.dumps({"user_id": "late", "ts": now - 30_000}),
                    orjson.dumps({"user_id": "late", "ts": now}),
                ], keys=[b"user_id:late"] * 3)
                while worker.stats["events"] + worker.stats["late"] < 3:
                    await asyncio.sleep(0.05)
        finally:
            await redis.aclose()
        return worker.stats

    stats = asyncio.run(scenario())
    assert stats["late"] == 1
    assert asyncio.run(counter_of(settings, "late")) == 2
