"""Definitions registry in Redis: one hash per kind, one version counter for all.

Writers change a definition and bump the version in one MULTI/EXEC; workers poll the version
(a single GET, every ``registry_poll_ms``) and rebuild their topology when it moved, so a publish
reaches every running worker within a second without a restart.
"""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis

from processor.domain.definitions import AttributeGroup, AttributeKey, EventLog
from processor.domain.segments import SegmentDefinition
from processor.domain.topology import Topology, compile_topology
from processor.state import keys

KINDS = (
    "attribute_keys",
    "attribute_groups",
    "services",
    "interventions",
    "event_logs",
    "segments",
    "subscriptions",
)


class Registry:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def version(self) -> int:
        raw = await self._redis.get(keys.REGISTRY_VERSION)
        return int(raw) if raw is not None else 0

    async def put(self, kind: str, item_id: str, doc: dict[str, Any]) -> int:
        """Store one definition and bump the version; return the new version."""
        _check_kind(kind)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.registry(kind), item_id, orjson.dumps(doc))
            pipe.incr(keys.REGISTRY_VERSION)
            _, version = await pipe.execute()
        return int(version)

    async def delete(self, kind: str, item_id: str) -> bool:
        _check_kind(kind)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(keys.registry(kind), item_id)
            pipe.incr(keys.REGISTRY_VERSION)
            removed, _ = await pipe.execute()
        return bool(removed)

    async def get(self, kind: str, item_id: str) -> dict[str, Any] | None:
        _check_kind(kind)
        raw = await self._redis.hget(keys.registry(kind), item_id)
        return None if raw is None else orjson.loads(raw)

    async def all(self, kind: str) -> dict[str, dict[str, Any]]:
        _check_kind(kind)
        raw = await self._redis.hgetall(keys.registry(kind))
        return {k.decode(): orjson.loads(v) for k, v in raw.items()}

    async def report_loaded(self, worker_id: str, version: int, now_ms: int) -> None:
        """A worker says it runs ``version`` now (its heartbeat, written on every poll)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(keys.WORKER_HEARTBEATS, {worker_id: now_ms})
            pipe.hset(keys.WORKER_VERSIONS, worker_id, version)
            await pipe.execute()

    async def live_worker_versions(self, now_ms: int, within_ms: int = 5_000) -> dict[str, int]:
        """Registry version loaded by each worker that reported within ``within_ms``."""
        live = await self._redis.zrangebyscore(keys.WORKER_HEARTBEATS, now_ms - within_ms, "+inf")
        if not live:
            return {}
        versions = await self._redis.hmget(keys.WORKER_VERSIONS, live)
        return {w.decode(): int(v or 0) for w, v in zip(live, versions, strict=True)}

    async def topology(self) -> Topology:
        """Compile what is published now. Reads the version first, so a change made while
        compiling is picked up by the next poll rather than lost."""
        version = await self.version()
        groups = [
            AttributeGroup.model_validate(doc)
            for doc in (await self.all("attribute_groups")).values()
            if doc.get("is_published")
        ]
        segments = [SegmentDefinition.model_validate(d) for d in (await self.all("segments")).values()]
        custom = [AttributeKey.model_validate(d) for d in (await self.all("attribute_keys")).values()]
        logs = [
            EventLog.model_validate(doc)
            for doc in (await self.all("event_logs")).values()
            if doc.get("is_published")
        ]
        return compile_topology(version, groups, segments, custom, logs)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown registry kind {kind!r}")
