"""SIGKILL the worker at random moments while events flow: every counter stays exact and every
transition appears once by id (duplicates only ever repeat an id)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from processor.domain import aggregations
from processor.domain.transitions import EntityRef, Transition
from processor.settings import Settings
from processor.state.entities import EntityStore
from processor.state.members import MemberIndex
from processor.state.registry import Registry
from processor.streams.kafka import ensure_topics
from tests.conftest import settings_env
from tests.integration.test_worker import publish_demo
from tests.support.kafka_io import produce, read_topic
from tests.support.running import spawn, wait_loaded

pytestmark = pytest.mark.integration

USERS = 200
EVENTS = 20_000
KILLS = 4
COUNTER = aggregations.AggSpec(kind="counter", period_ms=None, ttl_ms=None, time_unit=None)


def workload() -> tuple[list[bytes], list[bytes], dict[str, list[str]]]:
    """Events cycling each user's cart through 0,1,2 items, and the expected transitions."""
    values, keys, expected = [], [], {}
    seen: dict[str, int] = {}
    for i in range(EVENTS):
        user = f"crash-{i % USERS}"
        k = seen.get(user, 0)
        seen[user] = k + 1
        values.append(orjson.dumps({"user_id": user, "cart_items": k % 3}))
        keys.append(user.encode())
        if k % 3 == 1:
            expected.setdefault(user, []).append("enter")
        elif k % 3 == 0 and k > 0:
            expected.setdefault(user, []).append("exit")
    return values, keys, expected


async def produce_paced(settings: Settings, values: list[bytes], keys: list[bytes]) -> None:
    """Spread the events over a few seconds so that the kills land while they flow."""
    chunk = 500
    for start in range(0, len(values), chunk):
        await produce(settings, values[start:start + chunk], keys=keys[start:start + chunk])
        await asyncio.sleep(0.1)


async def counters(settings: Settings) -> dict[str, int]:
    redis = Redis.from_url(settings.redis_url)
    try:
        refs = [EntityRef("user_id", f"crash-{u}") for u in range(USERS)]
        states = await EntityStore(redis).read(refs)
    finally:
        await redis.aclose()
    out = {}
    for ref, state in states.items():
        stored = state.attributes.get(("shopper_stats", 1, "cart_events"))
        out[ref.id] = 0 if stored is None else int(aggregations.read(COUNTER, stored, 0))
    return out


def test_sigkill_mid_stream_keeps_counters_and_transitions_exact(
    settings: Settings, tmp_path: Path
) -> None:
    values, keys, expected = workload()
    env = settings_env(settings)
    log = tmp_path / "worker.log"
    rng = random.Random(7)

    async def scenario() -> None:
        await ensure_topics(settings)
        await publish_demo(settings)
        worker = spawn("worker", env, log)
        progress_at_kills = []
        try:
            producing = asyncio.create_task(produce_paced(settings, values, keys))
            for _ in range(KILLS):
                await wait_loaded(settings, timeout=60, pid=worker.pid)
                await asyncio.sleep(rng.uniform(0.2, 0.8))
                progress_at_kills.append(sum((await counters(settings)).values()))
                os.kill(worker.pid, signal.SIGKILL)
                worker.wait()
                worker = spawn("worker", env, log)
            await producing
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if sum((await counters(settings)).values()) >= EVENTS:
                    break
                await asyncio.sleep(0.5)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
        print(f"applied events at each kill: {progress_at_kills}")
        assert any(0 < p < EVENTS for p in progress_at_kills), progress_at_kills
        got = await counters(settings)
        assert got == {f"crash-{u}": EVENTS // USERS for u in range(USERS)}, log.read_text()[-3000:]

        total = sum(len(v) for v in expected.values())
        records = await read_topic(settings, settings.transitions_topic, at_least=total, settle=1.0)
        by_user: dict[str, list[str]] = {}
        seen_ids: set[str] = set()
        for record in records:
            transition = Transition.from_json(record.value)
            if transition.transition_id in seen_ids:
                continue  # a re-done batch re-produces the very same id
            seen_ids.add(transition.transition_id)
            by_user.setdefault(transition.entity.id, []).append(transition.event)
        assert by_user == expected
        await assert_index_matches_profiles(settings)

    asyncio.run(scenario())


async def assert_index_matches_profiles(settings: Settings) -> None:
    """The member index equals a recomputation from the stored profiles."""
    redis = Redis.from_url(settings.redis_url)
    try:
        segment = (await Registry(redis).topology()).segment_by_ref("active_cart")
        assert segment is not None
        indexed = {ref async for ref in MemberIndex(redis).members(segment.id)}
        refs = [EntityRef("user_id", f"crash-{u}") for u in range(USERS)]
        states = await EntityStore(redis).read(refs)
    finally:
        await redis.aclose()
    recomputed = {ref for ref, state in states.items() if state.profile["cart_items"][0] > 0}
    assert indexed == recomputed
    assert {ref for ref, state in states.items() if state.members.get(segment.id)} == recomputed
