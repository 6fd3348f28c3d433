"""Hot reload: definitions published or unpublished while a worker runs take effect live.

A group published mid-stream counts the events consumed after the worker loaded it and none
from before (no back-dating); unpublishing it stops its updates while other groups go on.
Prints how long the worker took to load each new registry version.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from processor.domain import aggregations
from processor.domain.transitions import EntityRef
from processor.publishing import publish_attribute_group
from processor.settings import Settings
from processor.state.registry import Registry
from processor.streams.kafka import ensure_topics
from processor.streams.worker import EventWorker
from tests.support.kafka_io import produce
from tests.support.running import running, wait_loaded
from tests.support.state import counter

pytestmark = pytest.mark.integration

COUNTER = aggregations.AggSpec(kind="counter")
USER = "hot-1"


def counter_group(name: str, published: bool = True) -> dict[str, Any]:
    return {"name": name, "version": 1, "is_published": published, "owner": "t@example.com",
            "attribute_key": {"name": "user_id"},
            "attributes": [{"name": f"{name}_events", "type": "int64", "aggregation": "counter",
                            "events": []}]}


async def count_of(settings: Settings, group: str) -> int | None:
    return await counter(settings, EntityRef("user_id", USER), group, f"{group}_events")


async def publish_and_time(settings: Settings, doc: dict[str, Any]) -> float:
    """Publish ``doc``; return the seconds until the running worker reported the new version."""
    redis = Redis.from_url(settings.redis_url)
    try:
        registry = Registry(redis)
        await publish_attribute_group(registry, doc)
        started = time.monotonic()
        await wait_loaded(settings, await registry.version(), timeout=15)
        return time.monotonic() - started
    finally:
        await redis.aclose()


async def send_and_wait(settings: Settings, n: int, total: int) -> None:
    """Produce ``n`` events for USER and wait until the always-on group counted ``total``."""
    await produce(settings, [orjson.dumps({"user_id": USER, "i": i}) for i in range(n)],
                  keys=[USER.encode()] * n)
    deadline = time.monotonic() + 30
    while await count_of(settings, "base") != total:
        assert time.monotonic() < deadline, await count_of(settings, "base")
        await asyncio.sleep(0.05)


def test_publish_and_unpublish_while_running(settings: Settings) -> None:
    async def scenario() -> None:
        await ensure_topics(settings)
        redis = Redis.from_url(settings.redis_url)
        try:
            await publish_attribute_group(Registry(redis), counter_group("base"))
            async with running(lambda stop: EventWorker(settings, redis).run(stop)):
                await wait_loaded(settings)
                await send_and_wait(settings, 7, total=7)
                assert await count_of(settings, "late") is None

                loaded_s = await publish_and_time(settings, counter_group("late"))
                await send_and_wait(settings, 5, total=12)
                assert await count_of(settings, "late") == 5  # the 7 earlier events: not back-dated

                unloaded_s = await publish_and_time(settings, counter_group("late", published=False))
                await send_and_wait(settings, 4, total=16)
                assert await count_of(settings, "late") == 5  # unpublished: no more updates
        finally:
            await redis.aclose()
        print(f"worker loaded the published group {loaded_s * 1000:.0f} ms after publish, the "
              f"unpublish {unloaded_s * 1000:.0f} ms after (registry_poll_ms="
              f"{settings.registry_poll_ms})")

    asyncio.run(scenario())
