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

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources

import orjson
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from processor.domain.entity import EntityState
from processor.domain.transitions import EntityRef
from processor.state import codec, keys, resp

log = logging.getLogger(__name__)

# Entities per script call. One call runs atomically and blocks Redis for its duration, so a
# chunk stays small enough (well under a millisecond) not to hold up API reads behind it.
WRITE_CHUNK = 32
_WRITE_LUA = resources.files("processor.state").joinpath("lua/write_entity.lua").read_text()


class _StateKeys(dict[EntityRef, bytes]):
    """ref -> its state hash's key as a RESP bulk string, as every write names it: formatting
    it took ~1 us per entity write. Bounded like the worker's cache."""

    def __missing__(self, ref: EntityRef) -> bytes:
        if len(self) >= STATE_KEYS_MAX:
            self.clear()
        value = self[ref] = resp.bulk(keys.entity_state(ref.key, ref.id).encode())
        return value


STATE_KEYS_MAX = 200_000
_STATE_KEYS = _StateKeys()


@dataclass
class EntityWrite:
    """The encoded changes of a set of entities, ready to send (and to re-send after a failure:
    the watermark check makes a repeat harmless): one packed script call per chunk."""

    refs: list[EntityRef] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    chunk_sizes: list[int] = field(default_factory=list)  # entities per chunk


class EntityStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._sha = hashlib.sha1(_WRITE_LUA.encode()).hexdigest().encode()
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

    def encode(self, states: list[EntityState]) -> EntityWrite:
        """Take the changes of ``states`` for writing and clear their dirty marks. Entities
        that were never written count as written from here on (``stored``)."""
        out = EntityWrite()
        bulk, state_keys = resp.bulk, _STATE_KEYS
        head = bulk(b"EVALSHA") + bulk(self._sha)
        for start in range(0, len(states), WRITE_CHUNK):
            chunk = states[start:start + WRITE_CHUNK]
            parts = [b"*%d\r\n" % (5 + len(chunk)), head, bulk(b"%d" % len(chunk))]
            header = []
            values: list[bytes] = []
            for state in chunk:
                ref = state.ref
                parts.append(state_keys[ref])
                out.refs.append(ref)
                header.append(codec.write_entry_into(state, values))
                state.clear_dirty()
                state.stored = True
            # the payload's bulk string around its values: joined once, with the rest
            parts += (bulk(orjson.dumps(header)), b"$%d\r\n" % sum(map(len, values)), *values, b"\r\n")
            out.chunks.append(b"".join(parts))
            out.chunk_sizes.append(len(chunk))
        return out

    async def send(
        self, write: EntityWrite, stage_first: Callable[[resp.Commands], None] | None = None
    ) -> list[EntityRef]:
        """Run ``write`` in one round trip, after the commands ``stage_first`` adds to it
        (idempotent ones: they are re-sent with the write after a failure). Returns the
        refused entities: a stored watermark was at or past ours, because another worker owns
        the partition now or this very write already landed before a retry. The caller drops
        those from its cache; they are reloaded from Redis."""
        commands = resp.Commands()
        if stage_first is not None:
            stage_first(commands)
        for chunk in write.chunks:
            commands.add_packed(chunk)
        if not commands.count:
            return []
        packed = commands.packed()
        try:
            results = await resp.round_trip(self._redis, packed, commands.count)
        except NoScriptError:
            # Redis lost its script cache (a restart): load it and send the whole write again.
            await self._redis.script_load(_WRITE_LUA)
            results = await resp.round_trip(self._redis, packed, commands.count)
        self.round_trips += 1
        refused = []
        first = 0  # position in write.refs of the chunk's first entity
        chunk_results = results[len(results) - len(write.chunks):]  # after the staged commands
        for size, positions in zip(write.chunk_sizes, chunk_results, strict=True):
            refused += [write.refs[first + position - 1] for position in positions]
            first += size
        for ref in refused:
            log.warning("entity %s: stale watermark, partition now owned elsewhere", ref)
        return refused

    async def write(self, states: list[EntityState]) -> list[EntityRef]:
        """Encode and send at once; returns the refused entities (see ``send``)."""
        return await self.send(self.encode(states))

    async def read(self, refs: list[EntityRef]) -> dict[EntityRef, EntityState]:
        """Same as ``load``; named for readers (API) that never write."""
        return await self.load(refs)
