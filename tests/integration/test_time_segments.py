"""Membership that changes with time alone: exits are emitted when due, with no event arriving."""

from __future__ import annotations

import asyncio
import statistics
import time

import orjson
import pytest
from redis.asyncio import Redis

from processor.domain.transitions import Transition
from processor.publishing import publish_attribute_group, publish_segment
from processor.settings import Settings
from processor.state.members import MemberIndex
from processor.state.registry import Registry
from processor.streams.kafka import ensure_topics
from tests.support.kafka_io import produce, read_topic
from tests.support.running import run_worker, running, wait_loaded

pytestmark = pytest.mark.integration

USERS = 20


async def publish(settings: Settings, *, segments: list[str],
                  groups: tuple[dict[str, object], ...] = ()) -> None:
    redis = Redis.from_url(settings.redis_url)
    try:
        registry = Registry(redis)
        for group in groups:
            await publish_attribute_group(registry, dict(group))
        for ql in segments:
            await publish_segment(registry, {"segment_ql": ql})
    finally:
        await redis.aclose()


def delays_ms(records: list, kind: str) -> list[int]:  # type: ignore[type-arg]
    """Produce time of each transition of ``kind`` minus the moment it was due."""
    out = []
    for record in records:
        transition = Transition.from_json(record.value)
        if transition.event == kind:
            out.append(record.timestamp - transition.at_ms)
    return out


def test_date_math_exit_is_emitted_when_due(settings: Settings) -> None:
    async def scenario() -> list[int]:
        await ensure_topics(settings)
        await publish(settings, segments=['FILTER last_active_ts > "now-3s" ALIAS recently_active'])
        async with running(lambda stop: run_worker(settings, stop)):
            await wait_loaded(settings)
            users = [f"t{i}" for i in range(USERS)]
            await produce(settings, [orjson.dumps({"user_id": u}) for u in users],
                          keys=[f"user_id:{u}".encode() for u in users])
            records = await read_topic(settings, settings.transitions_topic, at_least=2 * USERS,
                                       timeout=30, settle=1.0)
            redis = Redis.from_url(settings.redis_url)
            try:
                remaining = await MemberIndex(redis).count(
                    (await Registry(redis).topology()).segments[0].id)
            finally:
                await redis.aclose()
        kinds = sorted(Transition.from_json(r.value).event for r in records)
        assert kinds == ["enter"] * USERS + ["exit"] * USERS
        assert remaining == 0
        return delays_ms(records, "exit")

    delays = asyncio.run(scenario())
    print(f"time-based exit delay after due: p50={statistics.median(delays)} ms "
          f"max={max(delays)} ms over {len(delays)} exits")


def test_window_decay_exit_without_events(settings: Settings) -> None:
    group = {
        "name": "activity", "version": 1, "is_published": True, "owner": "t@example.com",
        "attribute_key": {"name": "user_id"},
        "attributes": [{"name": "recent_events", "type": "int64", "aggregation": "counter",
                        "events": [], "period": "PT4S"}],
    }

    async def scenario() -> list[Transition]:
        await ensure_topics(settings)
        await publish(settings, groups=(group,), segments=["FILTER recent_events >= 2 ALIAS busy"])
        async with running(lambda stop: run_worker(settings, stop)):
            await wait_loaded(settings)
            now = int(time.time() * 1000)
            await produce(settings, [orjson.dumps({"user_id": "w1", "ts": now + i}) for i in range(2)],
                          keys=[b"user_id:w1"] * 2)
            records = await read_topic(settings, settings.transitions_topic, at_least=2,
                                       timeout=30, settle=0.5)
        return [Transition.from_json(r.value) for r in records]

    transitions = asyncio.run(scenario())
    assert [(t.segment_slug, t.event) for t in transitions] == [("busy", "enter"), ("busy", "exit")]
    assert transitions[1].at_ms - transitions[0].at_ms >= 3000  # the window had to pass
