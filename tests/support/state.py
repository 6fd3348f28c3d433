"""Reading entity state back from Redis in tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis

from processor.domain import aggregations
from processor.domain.entity import EntityState
from processor.domain.transitions import EntityRef
from processor.settings import Settings
from processor.state.entities import EntityStore

T = TypeVar("T")
COUNTER = aggregations.AggSpec(kind="counter", period_ms=None, ttl_ms=None, time_unit=None)


async def entities(settings: Settings, refs: list[EntityRef]) -> dict[EntityRef, EntityState]:
    redis = Redis.from_url(settings.redis_url)
    try:
        return await EntityStore(redis).read(refs)
    finally:
        await redis.aclose()


async def counter(settings: Settings, ref: EntityRef, group: str, attribute: str) -> int | None:
    """A lifetime counter of version 1 of ``group``, or None before its first event."""
    stored = (await entities(settings, [ref]))[ref].attribute((group, 1, attribute))
    return None if stored is None else int(aggregations.read(COUNTER, stored, 0))


def with_redis(settings: Settings, action: Callable[[Redis], Awaitable[T]]) -> T:
    """Run ``action`` on a fresh client of the test Redis (from synchronous test code)."""

    async def main() -> T:
        redis = Redis.from_url(settings.redis_url)
        try:
            return await action(redis)
        finally:
            await redis.aclose()

    return asyncio.run(main())
