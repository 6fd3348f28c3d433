"""Load and write entity state in Redis: one round trip per batch each way.

The worker is the single writer of the entities of its partitions; this store is how it reads
them on first touch and writes back what a batch changed. Each entity's changed fields and its
offset watermarks go in one atomic script call (pipelined across entities), so a replayed event
is never applied twice and a crash never leaves half an update.
"""

from __future__ import annotations

import asyncio
import logging
from importlib import resources

from redis.asyncio import Redis

from processor.domain.entity import EntityState
from processor.domain.transitions import EntityRef
from processor.state import codec, keys

log = logging.getLogger(__name__)

WRITE_CHUNK = 250  # entities per pipelined write
_WRITE_LUA = resources.files("processor.state").joinpath("lua/write_entity.lua").read_text()


class EntityStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._write = redis.register_script(_WRITE_LUA)
        self.round_trips = 0  # for the benchmark: Redis round trips made by this store

    async def load(self, refs: list[EntityRef]) -> dict[EntityRef, EntityState]:
        """Read the full state of ``refs`` (missing entities come back empty)."""
        if not refs:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for ref in refs:
                pipe.hgetall(keys.entity_state(ref.key, ref.id))
            results = await pipe.execute()
        self.round_trips += 1
        return {ref: codec.decode_entity(ref, raw) for ref, raw in zip(refs, results, strict=True)}

    async def write(self, states: list[EntityState]) -> list[EntityRef]:
        """Write each entity's dirty fields and watermarks atomically; return the refused ones.

        A refused entity had a watermark in Redis at or past ours: another worker owns its
        partition now, or (after a failed write was retried) this very write already landed.
        The caller drops those entities from its cache; they are reloaded from Redis.
        """
        if not states:
            return []
        # Chunks go out as soon as they are encoded, so Redis runs the scripts of one chunk
        # while this process encodes the next (each entity is in exactly one chunk).
        sent = []
        for start in range(0, len(states), WRITE_CHUNK):
            pipe = self._redis.pipeline(transaction=False)
            for state in states[start:start + WRITE_CHUNK]:
                args: list[bytes | str | int] = []
                marks = codec.watermark_args(state)
                args.append(len(marks))
                for field, offset in marks.items():
                    args.extend((field, offset))
                args.append(codec.dirty_payload(state))
                await self._write(
                    keys=[keys.entity_state(state.ref.key, state.ref.id)], args=args, client=pipe
                )
            sent.append(asyncio.create_task(pipe.execute()))
            await asyncio.sleep(0)  # let it reach the socket before encoding the next chunk
        outcomes = await asyncio.gather(*sent, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome  # the caller retries the whole write; written chunks re-check
        results = [ok for chunk in outcomes for ok in chunk]  # type: ignore[union-attr]
        self.round_trips += len(sent)
        refused = []
        for state, ok in zip(states, results, strict=True):
            if ok:
                state.clear_dirty()
            else:
                refused.append(state.ref)
                log.warning("entity %s: stale watermark, partition now owned elsewhere", state.ref)
        return refused

    async def read(self, refs: list[EntityRef]) -> dict[EntityRef, EntityState]:
        """Same as ``load``; named for readers (API) that never write."""
        return await self.load(refs)
