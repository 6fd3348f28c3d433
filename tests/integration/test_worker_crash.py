"""SIGKILL the worker at random moments while events flow: every attribute equals the pure
reference implementation over the events, and every transition appears once by id
(duplicates only ever repeat an id)."""

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
from processor.publishing import publish_attribute_group
from processor.settings import Settings
from processor.state.entities import EntityStore
from processor.state.members import MemberIndex
from processor.state.registry import Registry
from processor.streams.kafka import ensure_topics
from tests.conftest import settings_env
from tests.integration.test_worker import publish_demo
from tests.support.kafka_io import produce, read_topic
from tests.support.running import spawn, wait_loaded
from tests.support.state import entities

pytestmark = pytest.mark.integration

USERS = 200
EVENTS = 20_000
KILLS = 4
COUNTER = aggregations.AggSpec(kind="counter", period_ms=None, ttl_ms=None, time_unit=None)
MIX_ATTRIBUTES = {  # name -> (aggregation, atomic property, type)
    "value_sum": ("sum", "se_value", "double"), "value_max": ("max", "se_value", "double"),
    "value_mean": ("mean", "se_value", "double"), "last_page": ("last", "page_url", "string"),
    "first_page": ("first", "page_url", "string"), "pages": ("unique_list", "page_url", "string_list"),
    "top_page": ("most_frequent", "page_url", "string"),
    "page_counts": ("category_count", "page_url", "dict"),
    "distinct_pages": ("approx_count_distinct", "page_url", "int64"),
}  # fmt: skip
MIX_GROUP = {
    "name": "mix", "version": 1, "is_published": True, "owner": "t@example.com",
    "attribute_key": {"name": "user_id"},
    "attributes": [{"name": name, "type": type_, "aggregation": agg, "events": [],
                    "property": {"type": "atomic", "name": prop}}
                   for name, (agg, prop, type_) in MIX_ATTRIBUTES.items()],
}  # fmt: skip
# Event times: a user's events are 2 s apart, jittered by up to 1.5 s, so their order holds
# per user (the expected transitions follow it) while the stream as a whole is out of order.
BASE_TS = int(time.time() * 1000) - 600_000


def workload() -> tuple[list[bytes], list[bytes], dict[str, list[str]]]:
    """Events cycling each user's cart through 0,1,2 items, and the expected transitions."""
    values, keys, expected = [], [], {}
    seen: dict[str, int] = {}
    rng = random.Random(11)
    for i in range(EVENTS):
        user = f"crash-{i % USERS}"
        k = seen.get(user, 0)
        seen[user] = k + 1
        values.append(orjson.dumps({
            "user_id": user, "cart_items": k % 3, "ts": BASE_TS + i * 10 - rng.randrange(0, 1500),
            "se_value": round(rng.uniform(0, 100), 2), "page_url": f"/p{rng.randrange(12)}",
        }))  # fmt: skip
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


async def assert_attributes_match_reference(settings: Settings, values: list[bytes]) -> None:
    """Every attribute of every user equals the reference over that user's events."""
    states = await entities(settings, [EntityRef("user_id", f"crash-{u}") for u in range(USERS)])
    events: dict[str, list[dict[str, object]]] = {}
    for raw in values:
        doc = orjson.loads(raw)
        events.setdefault(doc["user_id"], []).append(doc)
    now = int(time.time() * 1000)
    for ref, state in states.items():
        for name, (kind, prop, _) in MIX_ATTRIBUTES.items():
            spec = aggregations.AggSpec(kind=kind, period_ms=None, ttl_ms=None, time_unit=None)
            expected = aggregations.reference_value(
                spec, [(e[prop], e["ts"]) for e in events[ref.id]], now)  # type: ignore[misc]
            got = aggregations.read(spec, state.attribute(("mix", 1, name)), now)
            assert got == expected, (ref.id, name, got, expected)


async def counters(settings: Settings) -> dict[str, int]:
    states = await entities(settings, [EntityRef("user_id", f"crash-{u}") for u in range(USERS)])
    out = {}
    for ref, state in states.items():
        stored = state.attribute(("shopper_stats", 1, "cart_events"))
        out[ref.id] = 0 if stored is None else int(aggregations.read(COUNTER, stored, 0))
    return out


async def wait_for_progress(settings: Settings, above: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while sum((await counters(settings)).values()) <= above:
        assert time.monotonic() < deadline, f"no event applied past {above} in {timeout}s"
        await asyncio.sleep(0.05)


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
        redis = Redis.from_url(settings.redis_url)
        try:
            await publish_attribute_group(Registry(redis), MIX_GROUP)
        finally:
            await redis.aclose()
        worker = spawn("worker", env, log)
        progress_at_kills = []
        try:
            producing = asyncio.create_task(produce_paced(settings, values, keys))
            for _ in range(KILLS):
                await wait_loaded(settings, timeout=60, pid=worker.pid)
                # Kill only once this worker has applied something, so kills land mid-stream
                # even when a loaded machine makes the group join slow.
                before = progress_at_kills[-1] if progress_at_kills else 0
                await wait_for_progress(settings, above=before, timeout=60)
                await asyncio.sleep(rng.uniform(0.0, 0.5))
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
        await assert_attributes_match_reference(settings, values)

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
