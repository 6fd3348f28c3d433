"""The due-time schedule: when time alone may change an entity's segments.

One sorted set per partition of the keyed topics (the worker owning partition p re-evaluates
the entities due in shard p), members ``"<key>:<id>"``, scores epoch ms. Writes are staged on
the caller's pipeline so they travel in the same round trip as the rest of a batch; ZADD and
ZREM are idempotent, so a batch re-done after a crash stages the very same changes.
"""

from __future__ import annotations

from redis.asyncio import Redis

from processor.domain.transitions import EntityRef
from processor.state import keys
from processor.state.members import parse_member
from processor.state.resp import Commands


def stage(commands: Commands, partition: int, ref: EntityRef, due_ms: int | None) -> None:
    key = keys.due_schedule(partition)
    if due_ms is None:
        commands.add("ZREM", key, str(ref))
    else:
        commands.add("ZADD", key, due_ms, str(ref))


async def due(redis: Redis, partition: int, now_ms: int, limit: int) -> list[tuple[EntityRef, int]]:
    """Up to ``limit`` entities of ``partition`` due at or before ``now_ms``, earliest first."""
    rows = await redis.zrangebyscore(
        keys.due_schedule(partition), "-inf", now_ms, start=0, num=limit, withscores=True
    )
    return [(parse_member(member), int(score)) for member, score in rows]


async def pending(redis: Redis, partition: int) -> int:
    return int(await redis.zcard(keys.due_schedule(partition)))
