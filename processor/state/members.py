"""The member index: who is in a segment, without scanning the keyspace.

Each segment's members are spread over ``SHARDS`` sets (one Redis Cluster slot each). The
worker updates the index from each batch's membership changes *before* it writes the entities'
state and watermarks: SADD/SREM are idempotent, so a crash in between re-applies the same
changes on replay, and the index stays equal to the membership stored in the entities.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterable

from redis.asyncio import Redis

from processor.domain.transitions import EntityRef
from processor.state import keys
from processor.state.resp import Commands, round_trip

SHARDS = 16


def shard_of(entity: str) -> int:
    return zlib.crc32(entity.encode()) % SHARDS


def parse_member(member: bytes | str) -> EntityRef:
    text = member.decode() if isinstance(member, bytes) else member
    key, _, entity_id = text.partition(":")
    return EntityRef(key, entity_id)


def stage(commands: Commands, changes: Iterable[tuple[str, EntityRef, bool]]) -> None:
    """Add a batch's membership changes (segment id, entity, member), in order, to the caller's
    commands: one SADD or SREM per index shard touched, each change's last state (idempotent)."""
    final: dict[tuple[str, str], bool] = {}
    for segment_id, ref, member in changes:
        final[(segment_id, str(ref))] = member
    grouped: dict[tuple[str, bool], list[str]] = {}
    for (segment_id, entity), member in final.items():
        grouped.setdefault((keys.segment_members(segment_id, shard_of(entity)), member), []).append(entity)
    for (key, member), entities in grouped.items():
        commands.add("SADD" if member else "SREM", key, *entities)


class MemberIndex:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def apply(self, changes: Iterable[tuple[str, EntityRef, bool]]) -> None:
        """Apply (segment id, entity, is member) changes in one round trip."""
        commands = Commands()
        stage(commands, changes)
        if commands.count:
            await round_trip(self._redis, commands.packed(), commands.count)

    async def members(self, segment_id: str, *, page: int = 500) -> AsyncIterator[EntityRef]:
        """Every member, shard by shard (SSCAN: members that stay in throughout are returned)."""
        for shard in range(SHARDS):
            key = keys.segment_members(segment_id, shard)
            async for member in self._redis.sscan_iter(key, count=page):
                yield parse_member(member)

    async def page(self, segment_id: str, shard: int, cursor: int,
                   count: int) -> tuple[int, list[EntityRef]]:
        """One resumable SSCAN page of one shard: the next cursor (0 = shard done) and refs."""
        next_cursor, found = await self._redis.sscan(
            keys.segment_members(segment_id, shard), cursor, count=count
        )
        return int(next_cursor), [parse_member(m) for m in found]

    async def count(self, segment_id: str) -> int:
        async with self._redis.pipeline(transaction=False) as pipe:
            for shard in range(SHARDS):
                pipe.scard(keys.segment_members(segment_id, shard))
            sizes = await pipe.execute()
        return int(sum(sizes))

    async def is_member(self, segment_id: str, ref: EntityRef) -> bool:
        entity = str(ref)
        return bool(await self._redis.sismember(keys.segment_members(segment_id, shard_of(entity)), entity))
