"""The due-time schedule: when time alone may change an entity's segments.

One sorted set per partition of the keyed topics (the worker owning partition p re-evaluates
the entities due in shard p), members ``"<key>:<id>"``, scores epoch ms. Writes are staged on
the caller's commands so they travel in the same round trip as the rest of a batch; ZADD and
ZREM are idempotent, so a batch re-done after a crash stages the very same changes.
"""

from __future__ import annotations

from collections.abc import Iterable

from redis.asyncio import Redis

from processor.domain.transitions import EntityRef
from processor.state import keys
from processor.state.members import parse_member
from processor.state.resp import Commands


def stage(commands: Commands, rows: Iterable[tuple[int, EntityRef, int | None]]) -> None:
    """Add a batch's due times (partition, entity, due ms or None: nothing due) to the caller's
    commands: one ZADD and one ZREM per partition at most, each entity's last row."""
    final: dict[tuple[int, str], int | None] = {}
    for partition, ref, due_ms in rows:
        final[(partition, str(ref))] = due_ms
    adds: dict[int, list[int | str]] = {}
    removes: dict[int, list[str]] = {}
    for (partition, entity), due_ms in final.items():
        if due_ms is None:
            removes.setdefault(partition, []).append(entity)
        else:
            adds.setdefault(partition, []).extend((due_ms, entity))
    for partition, pairs in adds.items():
        commands.add("ZADD", keys.due_schedule(partition), *pairs)
    for partition, entities in removes.items():
        commands.add("ZREM", keys.due_schedule(partition), *entities)


def stage_probe(commands: Commands, partition: int, now_ms: int) -> None:
    """Ask whether ``partition`` has an entity due at or before ``now_ms``: the reply is an
    empty list when it has none."""
    commands.add("ZRANGEBYSCORE", keys.due_schedule(partition), "-inf", now_ms, "LIMIT", 0, 1)


async def due(redis: Redis, partition: int, now_ms: int, limit: int) -> list[tuple[EntityRef, int]]:
    """Up to ``limit`` entities of ``partition`` due at or before ``now_ms``, earliest first."""
    rows = await redis.zrangebyscore(
        keys.due_schedule(partition), "-inf", now_ms, start=0, num=limit, withscores=True
    )
    return [(parse_member(member), int(score)) for member, score in rows]


async def pending(redis: Redis, partition: int) -> int:
    return int(await redis.zcard(keys.due_schedule(partition)))
