"""Load and write entity state in Redis: one round trip per batch each way.

The worker is the single writer of the entities of its partitions; this store is how it reads
them on first touch and writes back what a batch changed. Writing happens in two steps so the
worker can apply its next batch while Redis applies this one:

- ``encode`` (synchronous) takes each entity's changed fields and advanced watermarks and
  clears its dirty marks: what the batch after changes is never mixed into this write;
- ``send`` runs the encoded write. Each entity's fields and watermarks change atomically (one
  script call covers a chunk of entities, checking every entity's watermarks before touching
  it), so a replayed event is never applied twice and a crash never leaves half an update.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

from processor.domain.entity import EntityState
from processor.domain.transitions import EntityRef
from processor.state import codec, keys

log = logging.getLogger(__name__)

# Entities per script call. One call runs atomically and blocks Redis for its duration, so a
# chunk stays small enough (well under a millisecond) not to hold up API reads behind it.
WRITE_CHUNK = 32
_WRITE_LUA = resources.files("processor.state").joinpath("lua/write_entity.lua").read_text()

Arg = bytes | str | int


@dataclass
class EntityWrite:
    """The encoded changes of a set of entities, ready to send (and to re-send after a failure:
    the watermark check makes a repeat harmless)."""

    refs: list[EntityRef] = field(default_factory=list)
    chunks: list[tuple[list[str], list[Arg]]] = field(default_factory=list)


class EntityStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._script = redis.register_script(_WRITE_LUA)
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

    @staticmethod
    def encode(states: list[EntityState]) -> EntityWrite:
        """Take the changes of ``states`` for writing and clear their dirty marks. Entities
        that were never written count as written from here on (``stored``)."""
        out = EntityWrite()
        for start in range(0, len(states), WRITE_CHUNK):
            chunk_keys: list[str] = []
            args: list[Arg] = []
            for state in states[start:start + WRITE_CHUNK]:
                ref = state.ref
                marks = codec.watermark_args(state)
                args.append(len(marks))
                for mark, offset in marks.items():
                    args.append(mark)
                    args.append(offset)
                args.append(codec.dirty_payload(state))
                chunk_keys.append(keys.entity_state(ref.key, ref.id))
                out.refs.append(ref)
                state.clear_dirty()
                state.stored = True
            out.chunks.append((chunk_keys, args))
        return out

    async def send(
        self, write: EntityWrite, stage_first: Callable[[Pipeline], None] | None = None
    ) -> list[EntityRef]:
        """Run ``write`` in one round trip, after the commands ``stage_first`` adds to the same
        pipeline (idempotent ones: they are re-sent with the write after a failure). Returns the
        refused entities: a stored watermark was at or past ours, because another worker owns
        the partition now or this very write already landed before a retry. The caller drops
        those from its cache; they are reloaded from Redis."""
        if not write.chunks and stage_first is None:
            return []
        try:
            results = await self._execute(write, stage_first)
        except NoScriptError:
            # Redis lost its script cache (a restart): load it and send the whole write again.
            await self._redis.script_load(_WRITE_LUA)
            results = await self._execute(write, stage_first)
        refused = []
        first = 0  # position in write.refs of the chunk's first entity
        chunk_results = results[len(results) - len(write.chunks):]  # after the staged commands
        for (chunk_keys, _), positions in zip(write.chunks, chunk_results, strict=True):
            refused += [write.refs[first + position - 1] for position in positions]
            first += len(chunk_keys)
        for ref in refused:
            log.warning("entity %s: stale watermark, partition now owned elsewhere", ref)
        return refused

    async def _execute(
        self, write: EntityWrite, stage_first: Callable[[Pipeline], None] | None
    ) -> list[list[int]]:
        async with self._redis.pipeline(transaction=False) as pipe:
            if stage_first is not None:
                stage_first(pipe)
            for chunk_keys, args in write.chunks:
                pipe.evalsha(self._script.sha, len(chunk_keys), *chunk_keys, *args)
            results = await pipe.execute()
        self.round_trips += 1
        return results  # type: ignore[no-any-return]

    async def write(self, states: list[EntityState]) -> list[EntityRef]:
        """Encode and send at once; returns the refused entities (see ``send``)."""
        return await self.send(self.encode(states))

    async def read(self, refs: list[EntityRef]) -> dict[EntityRef, EntityState]:
        """Same as ``load``; named for readers (API) that never write."""
        return await self.load(refs)
