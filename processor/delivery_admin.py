"""Delivery operations: backfill a subscription, list and redeliver dead letters.

All three work *through* the ``transitions`` topic: what they emit is a transition record with
a ``subscription`` header, which the delivery worker routes to that subscription only. So a
backfilled or redelivered record goes through the same lane (order, retries, parking, dead
letters, metrics) as a live one, and is keyed by entity, after what the entity already had.

Backfill (spec §2.3, §5.1 (e)): every current member of the subscription's single segment is
delivered once as ``enter``. Members come from the member index, shard by shard, in pages;
each page's transitions are produced and acknowledged *before* the position (shard, SSCAN
cursor) is saved, so a crash resumes from the last saved page and re-produces at most one page
— with the same transition ids (``cause = "backfill/<subscription id>"``) and the same ``at``
(the backfill's start time, saved first), hence the same delivery ids. A lock in Redis makes
one worker run it; ``state=done`` makes it run once across restarts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis

from processor.clock import Clock, wall_ms
from processor.domain.subscriptions import Subscription
from processor.domain.transitions import EntityRef, Transition, transition_id
from processor.errors import DefinitionError
from processor.settings import Settings
from processor.state.deliveries import BackfillStore

__all__ = ["BackfillStore", "backfill", "backfill_status", "list_dead_letters", "redeliver"]
from processor.state.entities import EntityStore
from processor.state.members import SHARDS, MemberIndex
from processor.state.registry import Registry
from processor.streams import kafka

TARGET_HEADER = "subscription"
LOCK_TTL_MS = 60_000
PAGE = 500


@dataclass(frozen=True, slots=True)
class BackfillPage:
    refs: list[EntityRef]
    shard: int
    cursor: int


async def backfill(redis: Redis, producer: AIOKafkaProducer, settings: Settings,
                   subscription: Subscription, *, owner: str, clock: Clock = wall_ms,
                   page: int = PAGE) -> bool:
    """Run (or resume) the backfill of ``subscription``; True once it is done (now or before),
    False when another worker holds it. Raises ``DefinitionError`` if its segment is unknown."""
    store = BackfillStore(redis)
    progress = await store.progress(subscription.id)
    if progress.get("state") == "done":
        return True
    if not await store.claim(subscription.id, owner, LOCK_TTL_MS):
        return False
    try:
        segment_id, slug = await _segment_of(Registry(redis), subscription)
        if not progress:
            progress = {"state": "running", "shard": "0", "cursor": "0", "produced": "0",
                        "started_ms": str(clock()), "segment_id": segment_id}
            await store.save(subscription.id, **progress)
        started_ms = int(progress["started_ms"])
        shard, cursor, produced = (int(progress[k]) for k in ("shard", "cursor", "produced"))
        entities = EntityStore(redis)
        while shard < SHARDS:
            found = await _page(redis, segment_id, shard, cursor, page)
            states = await entities.read(found.refs)
            transitions = [
                Transition(transition_id(ref, segment_id, "enter", f"backfill/{subscription.id}"),
                           ref, segment_id, slug, "enter", started_ms, dict(state.identifiers),
                           state.profile_values())
                for ref, state in states.items()
            ]
            await produce_targeted(producer, settings, subscription.id, transitions)
            produced += len(transitions)
            shard, cursor = found.shard, found.cursor
            await store.save(subscription.id, shard=shard, cursor=cursor, produced=produced)
            if not await store.claim(subscription.id, owner, LOCK_TTL_MS):
                return False  # lost the lock (stalled past its TTL): the new holder resumes
        await store.save(subscription.id, state="done", finished_ms=clock())
        return True
    finally:
        await store.release(subscription.id, owner)


async def _page(redis: Redis, segment_id: str, shard: int, cursor: int, count: int) -> BackfillPage:
    """One SSCAN page of one shard of the member index, and where the next one starts."""
    next_cursor, refs = await MemberIndex(redis).page(segment_id, shard, cursor, count)
    if next_cursor == 0:
        return BackfillPage(refs, shard + 1, 0)
    return BackfillPage(refs, shard, next_cursor)


async def _segment_of(registry: Registry, subscription: Subscription) -> tuple[str, str]:
    """(id, slug) of the subscription's one segment; ``segment_ids`` may name id or slug."""
    if len(subscription.segment_ids) != 1:
        raise DefinitionError(f"subscription {subscription.id}: backfill needs exactly one segment")
    wanted = subscription.segment_ids[0]
    for segment_id, doc in (await registry.all("segments")).items():
        slug = str(doc.get("slug_name") or segment_id)
        if wanted in (segment_id, slug):
            return segment_id, slug
    raise DefinitionError(f"subscription {subscription.id}: segment {wanted!r} is not published")


async def produce_targeted(producer: AIOKafkaProducer, settings: Settings, subscription_id: str,
                           transitions: Iterable[Transition]) -> int:
    """Produce transitions for one subscription only; returns once all are acknowledged."""
    futures = [
        await producer.send(settings.transitions_topic, t.to_json(), key=str(t.entity).encode(),
                            headers=[(TARGET_HEADER, subscription_id.encode())])
        for t in transitions
    ]
    await asyncio.gather(*futures)
    return len(futures)


async def backfill_status(redis: Redis, subscription_id: str) -> dict[str, str]:
    return await BackfillStore(redis).progress(subscription_id)


# dead letters ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DeadDelivery:
    """One record of the deliveries dead-letter topic."""

    partition: int
    offset: int
    timestamp_ms: int
    reason: str
    subscription_id: str | None
    delivery_id: str | None
    attempts: int | None
    transition: Transition | None  # None: the transitions record itself was unreadable


def parse_dead_letter(partition: int, offset: int, timestamp_ms: int, value: bytes,
                      headers: dict[str, str]) -> DeadDelivery:
    reason = headers.get("reason", "unknown")
    try:
        doc = orjson.loads(value)
        transition = Transition.from_json(orjson.dumps(doc["transition"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return DeadDelivery(partition, offset, timestamp_ms, reason, None, None, None, None)
    return DeadDelivery(partition, offset, timestamp_ms, str(doc.get("reason") or reason),
                        doc.get("subscription_id"), doc.get("delivery_id"), doc.get("attempts"),
                        transition)


async def list_dead_letters(settings: Settings, *, subscription_id: str | None = None,
                            since_offset: int = 0, limit: int | None = None) -> list[DeadDelivery]:
    """Dead letters present now (read from the start, no consumer group), oldest first."""
    found: list[DeadDelivery] = []
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                enable_auto_commit=False, isolation_level="read_committed")
    await consumer.start()
    try:
        topic = settings.deliveries_dlq_topic
        tps = [TopicPartition(topic, p) for p in range(kafka.project_topics(settings)[topic])]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, since_offset)
        while await _behind_end(consumer, ends):
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                for r in records:
                    if r.offset >= ends[tp]:
                        continue
                    headers = {k: v.decode(errors="replace") for k, v in r.headers or ()}
                    dead = parse_dead_letter(tp.partition, r.offset, r.timestamp, r.value or b"",
                                             headers)
                    if subscription_id is None or dead.subscription_id == subscription_id:
                        found.append(dead)
            if limit is not None and len(found) >= limit:
                break
    finally:
        await consumer.stop()
    found.sort(key=lambda d: (d.timestamp_ms, d.partition, d.offset))
    return found[:limit] if limit is not None else found


async def _behind_end(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return True
    return False


async def redeliver(settings: Settings, dead: Iterable[DeadDelivery]) -> int:
    """Send dead letters back through their subscription's lane (same delivery ids). Records
    without a transition or subscription cannot be redelivered and are skipped."""
    by_subscription: dict[str, list[Transition]] = {}
    for item in dead:
        if item.transition is not None and item.subscription_id:
            by_subscription.setdefault(item.subscription_id, []).append(item.transition)
    producer = kafka.producer(settings)
    await producer.start()
    try:
        return sum([await produce_targeted(producer, settings, sub_id, transitions)
                    for sub_id, transitions in by_subscription.items()])
    finally:
        await producer.stop()
