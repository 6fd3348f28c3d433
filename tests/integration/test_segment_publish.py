"""A segment published (or changed) while profiles already exist is evaluated for them in the
background: enters and exits for real changes only, no event needed."""

from __future__ import annotations

import asyncio
from collections import Counter

import orjson
import pytest
from redis.asyncio import Redis

from processor.domain.transitions import Transition
from processor.publishing import publish_attribute_group, publish_segment
from processor.settings import Settings
from processor.state.registry import Registry
from processor.streams.kafka import ensure_topics
from processor.streams.worker import EventWorker
from tests.integration.test_worker import COUNTER_GROUP
from tests.support.kafka_io import produce, read_topic
from tests.support.running import running, wait_loaded

pytestmark = pytest.mark.integration

USERS = 30


def test_new_and_changed_segments_are_evaluated_for_existing_profiles(settings: Settings) -> None:
    async def scenario() -> list[Transition]:
        await ensure_topics(settings)
        redis = Redis.from_url(settings.redis_url)
        registry = Registry(redis)
        worker = EventWorker(settings, redis)
        try:
            await publish_attribute_group(registry, COUNTER_GROUP)
            async with running(worker.run):
                await wait_loaded(settings)
                users = [f"p{i}" for i in range(USERS)]
                await produce(settings, [orjson.dumps({"user_id": u, "plan": "pro" if i % 3 == 0 else "free"})
                                         for i, u in enumerate(users)],
                              keys=[f"user_id:{u}".encode() for u in users])
                while worker.stats["events"] < USERS:
                    await asyncio.sleep(0.05)
                await publish_segment(registry, {"segment_ql": 'FILTER plan = "pro" ALIAS plan_watch'})
                await read_topic(settings, settings.transitions_topic, at_least=USERS // 3, settle=1.0)
                await publish_segment(registry, {"segment_ql": 'FILTER plan = "free" ALIAS plan_watch'})
                records = await read_topic(settings, settings.transitions_topic, at_least=USERS + USERS // 3,
                                           settle=1.5)
        finally:
            await redis.aclose()
        return [Transition.from_json(r.value) for r in records]

    transitions = asyncio.run(scenario())
    pro = {f"p{i}" for i in range(USERS) if i % 3 == 0}
    first = [t for t in transitions if t.event == "enter" and t.entity.id in pro]
    assert {t.entity.id for t in first} == pro
    counts = Counter((t.entity.id, t.event) for t in transitions)
    assert all(n == 1 for n in counts.values()), counts
    exits = {t.entity.id for t in transitions if t.event == "exit"}
    enters_free = {t.entity.id for t in transitions if t.event == "enter" and t.entity.id not in pro}
    assert exits == pro
    assert enters_free == {f"p{i}" for i in range(USERS)} - pro
