"""The worker's write path against real Redis: hand-packed script calls, staged commands in the
same round trip, the watermark fence and the lost script cache."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from processor.domain.entity import EntityState
from processor.domain.transitions import EntityRef
from processor.state import entities, keys, members, reevaluation, resp, schedule
from processor.state.entities import EntityStore

pytestmark = pytest.mark.integration


def _state(user: str, offset: int, fields: int = 3) -> EntityState:
    state = EntityState(EntityRef("user_id", user))
    state.advance("events", 0, offset)
    for n in range(fields):
        state.set_attribute(("g", 1, f"a{n}"), [offset, n, f"v\"{n}\né"])  # values cut by byte length
    state.set_profile("plan", "pro", offset)
    state.set_member("seg", True)
    return state


def _run(redis_url: str, scenario) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        redis = Redis.from_url(redis_url)
        try:
            await scenario(redis)
        finally:
            await redis.aclose()

    asyncio.run(main())


def test_a_written_batch_loads_back_and_staged_commands_run_first(redis_url: str) -> None:
    async def scenario(redis: Redis) -> None:
        store = EntityStore(redis)
        # more entities than one script call takes, one of them with many fields
        states = [_state(f"u{i}", 10 + i) for i in range(entities.WRITE_CHUNK * 2 + 5)]
        states.append(_state("wide", 99, fields=600))
        refused = await store.send(store.encode(states),
                                   lambda commands: commands.add("SADD", "staged", "x"))
        assert refused == []
        assert await redis.smembers("staged") == {b"x"}
        loaded = await store.load([s.ref for s in states])
        for state in states:
            got = loaded[state.ref]
            assert got.attributes() == state.attributes()
            assert got.profile == state.profile
            assert got.members == {"seg": True}
            assert got.watermarks == state.watermarks
        # leaving the segment deletes its field
        left = loaded[states[0].ref]
        left.set_member("seg", False)
        left.advance("events", 0, 1000)
        assert await store.write([left]) == []
        assert (await store.load([left.ref]))[left.ref].members == {}

    _run(redis_url, scenario)


def test_a_write_behind_a_newer_watermark_is_refused_and_changes_nothing(redis_url: str) -> None:
    async def scenario(redis: Redis) -> None:
        store = EntityStore(redis)
        assert await store.write([_state("a", 50), _state("b", 50)]) == []
        stale, fresh = _state("a", 50, fields=1), _state("b", 51, fields=1)
        stale.set_profile("plan", "free", 60)
        fresh.set_profile("plan", "team", 61)
        assert await store.write([stale, fresh]) == [stale.ref]
        loaded = await store.load([stale.ref, fresh.ref])
        assert loaded[stale.ref].profile["plan"] == ["pro", 50]
        assert loaded[stale.ref].attributes() == _state("a", 50).attributes()
        # the refused entity's values were skipped in the payload, not taken by the next one
        assert loaded[fresh.ref].watermarks == {("events", 0): 51}
        assert loaded[fresh.ref].profile["plan"] == ["team", 61]
        assert loaded[fresh.ref].attributes() == fresh.attributes()  # its group, written whole

    _run(redis_url, scenario)


def test_a_lost_script_cache_is_reloaded_and_the_write_lands(redis_url: str) -> None:
    async def scenario(redis: Redis) -> None:
        store = EntityStore(redis)
        assert await store.write([_state("a", 1)]) == []
        await redis.script_flush()  # what a Redis restart does to the script cache
        assert await store.write([_state("b", 2)]) == []
        assert (await store.load([EntityRef("user_id", "b")]))[EntityRef("user_id", "b")].watermarks \
            == {("events", 0): 2}
        # the connection that got the error was dropped, not reused with replies unread
        assert await resp.round_trip(redis, resp.command("PING"), 1) == [b"PONG"]

    _run(redis_url, scenario)


def test_a_batch_of_index_and_schedule_changes_leaves_each_entity_s_last_state(
    redis_url: str,
) -> None:
    a, b, c = (EntityRef("user_id", u) for u in "abc")

    def stage(commands: resp.Commands) -> None:
        members.stage(commands, [("s1", a, True), ("s1", b, True), ("s1", a, False),
                                 ("s2", c, True), ("s1", b, True)])
        schedule.stage(commands, [(0, a, 500), (0, b, 700), (1, c, None), (0, a, None),
                                  (1, b, 900)])
        reevaluation.stage_entities(commands, [(0, a), (0, b), (1, c)])

    async def scenario(redis: Redis) -> None:
        await redis.zadd(keys.due_schedule(1), {str(c): 100})
        await redis.sadd(keys.segment_members("s1", members.shard_of(str(a))), str(a))
        store = EntityStore(redis)
        assert await store.send(store.encode([]), stage) == []
        index = members.MemberIndex(redis)
        assert {r async for r in index.members("s1")} == {b}
        assert {r async for r in index.members("s2")} == {c}
        assert await redis.zrange(keys.due_schedule(0), 0, -1, withscores=True) == [(b"user_id:b", 700.0)]
        assert await redis.zrange(keys.due_schedule(1), 0, -1, withscores=True) == [(b"user_id:b", 900.0)]
        assert await redis.smembers(keys.partition_entities(0)) == {b"user_id:a", b"user_id:b"}
        assert await redis.smembers(keys.partition_entities(1)) == {b"user_id:c"}

    _run(redis_url, scenario)
