"""Delivery state in Redis: parked records (retried in the background) and backfill progress.

Keys (templates in ``processor.state.keys``):

- ``sb:dlv:{<subscription>:<partition>}:parked`` — hash, transition id -> parked record (JSON).
  One hash per (subscription, partition of ``transitions``), so the worker that owns a partition
  owns its parked records, and one subscription's backlog spreads over Cluster slots. A record is
  parked and removed with single-key commands (HSET / HDEL), so each change is atomic.
- ``sb:dlv:{<subscription>}:backfill`` — hash of backfill progress (``state``, ``shard``,
  ``cursor``, ``produced``, ``started_ms``, ``finished_ms``).
- ``sb:dlv:{<subscription>}:backfill:lock`` — string, the worker running that backfill (PX).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from processor.domain.transitions import Transition
from processor.state import keys

_PARKED_KEY = re.compile(r"^sb:dlv:\{(?P<subscription>.+):(?P<partition>\d+)\}:parked$")


parked_key = keys.parked_deliveries
backfill_key = keys.backfill_progress
backfill_lock_key = keys.backfill_lock


@dataclass(slots=True)
class ParkedRecord:
    """One transition a subscription could not take yet, with its retry history.

    ``offset`` (in ``partition`` of ``transitions``) orders one entity's parked records;
    ``stored`` is in-memory only: whether the record is durable in Redis yet.
    """

    partition: int
    offset: int
    timestamp_ms: int
    transition: Transition
    attempts: int
    first_failed_ms: int
    reason: str
    stored: bool = False

    def to_json(self) -> bytes:
        return orjson.dumps({
            "partition": self.partition, "offset": self.offset, "ts": self.timestamp_ms,
            "transition": orjson.loads(self.transition.to_json()), "attempts": self.attempts,
            "first_failed_ms": self.first_failed_ms, "reason": self.reason,
        })

    @classmethod
    def from_json(cls, raw: bytes) -> ParkedRecord:
        doc: dict[str, Any] = orjson.loads(raw)
        return cls(partition=int(doc["partition"]), offset=int(doc["offset"]),
                   timestamp_ms=int(doc["ts"]),
                   transition=Transition.from_json(orjson.dumps(doc["transition"])),
                   attempts=int(doc["attempts"]), first_failed_ms=int(doc["first_failed_ms"]),
                   reason=str(doc["reason"]), stored=True)


class ParkStore:
    """Parked records of each (subscription, partition); see the module docstring."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def save(self, subscription_id: str, records: Iterable[ParkedRecord]) -> None:
        """Store (or overwrite) records in one round trip; marks them ``stored``."""
        batch = list(records)
        if not batch:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for record in batch:
                pipe.hset(parked_key(subscription_id, record.partition),
                          record.transition.transition_id, record.to_json())
            await pipe.execute()
        for record in batch:
            record.stored = True

    async def remove(self, subscription_id: str, records: Iterable[ParkedRecord]) -> None:
        batch = list(records)
        if not batch:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for record in batch:
                pipe.hdel(parked_key(subscription_id, record.partition),
                          record.transition.transition_id)
            await pipe.execute()

    async def load(self, subscription_id: str, partition: int) -> list[ParkedRecord]:
        """Every parked record of the pair, in offset order."""
        raw = await self._redis.hvals(parked_key(subscription_id, partition))
        return sorted((ParkedRecord.from_json(_bytes(v)) for v in raw), key=lambda r: r.offset)

    async def count(self, subscription_id: str, partitions: Iterable[int]) -> int:
        async with self._redis.pipeline(transaction=False) as pipe:
            for partition in partitions:
                pipe.hlen(parked_key(subscription_id, partition))
            return int(sum(await pipe.execute()))

    async def drop(self, subscription_id: str, partitions: Iterable[int]) -> None:
        """Forget every parked record of the subscription (it was deleted)."""
        names = [parked_key(subscription_id, p) for p in partitions]
        if names:
            await self._redis.delete(*names)

    async def orphans(self, known: set[str]) -> list[str]:
        """Parked keys of subscriptions not in ``known`` (deleted while no worker ran)."""
        found = []
        async for name in self._redis.scan_iter(match=keys.PARKED_DELIVERIES_PATTERN, count=500):
            text = _text(name)
            match = _PARKED_KEY.match(text)
            if match and match["subscription"] not in known:
                found.append(text)
        return found


class BackfillStore:
    """Backfill progress of each subscription, and the lock that makes one worker run it."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def progress(self, subscription_id: str) -> dict[str, str]:
        raw = await self._redis.hgetall(backfill_key(subscription_id))
        return {_text(k): _text(v) for k, v in raw.items()}

    async def save(self, subscription_id: str, **fields: str | int) -> None:
        await self._redis.hset(backfill_key(subscription_id),
                               mapping={k: str(v) for k, v in fields.items()})

    async def claim(self, subscription_id: str, owner: str, ttl_ms: int) -> bool:
        """Take (or renew our own) lock; False when another worker holds it."""
        key = backfill_lock_key(subscription_id)
        if await self._redis.set(key, owner, nx=True, px=ttl_ms):
            return True
        current = await self._redis.get(key)
        if current is not None and _text(current) == owner:
            await self._redis.pexpire(key, ttl_ms)
            return True
        return False

    async def release(self, subscription_id: str, owner: str) -> None:
        key = backfill_lock_key(subscription_id)
        current = await self._redis.get(key)
        if current is not None and _text(current) == owner:
            await self._redis.delete(key)

    async def reset(self, subscription_id: str) -> None:
        """Forget progress: the next run starts over (a subscription deleted or re-run)."""
        await self._redis.delete(backfill_key(subscription_id), backfill_lock_key(subscription_id))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value
