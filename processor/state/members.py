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
from processor.state.resp import Commands

SHARDS = 16


def shard_of(entity: str) -> int:
    return zlib.crc32(entity.encode()) % SHARDS


def parse_member(member: bytes | str) -> EntityRef:
    text = member.decode() if isinstance(member, bytes) else member
    key, _, entity_id = text.partition(":")
    return EntityRef(key, entity_id)


def stage(commands: Commands, segment_id: str, ref: EntityRef, member: bool) -> None:
    """Add one membership change to the caller's commands (idempotent)."""
    entity = str(ref)
    key = keys.segment_members(segment_id, shard_of(entity))
    if member:
        commands.add("SADD", key, entity)
    else:
        commands.add("SREM", key, entity)


class MemberIndex:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def apply(self, changes: Iterable[tuple[str, EntityRef, bool]]) -> None:
        """Apply (segment id, entity, is member) changes in one pipelined round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            count = 0
            for segment_id, ref, member in changes:
                stage(pipe, segment_id, ref, member)
                count += 1
            if count:
                await pipe.execute()

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
