"""The delivery worker: Kafka ``transitions`` -> one isolated lane per subscription.

The consumer loop only routes: it reads ``getmany`` batches, parses each record (a bad one is
dead-lettered with its reason), and submits it to the lane of every matching subscription
(``processor.sinks.lane``). Lanes deliver on their own tasks, so a slow or failing target never
delays another subscription or the consumer.

Commit rule: an offset of a partition is committed only when every lane it was submitted to has
*settled* it: delivered, dead-lettered (acked by Kafka), or parked in Redis for background
retry. ``OffsetTracker`` keeps, per partition, the lowest unsettled offset; the worker commits
up to it after every poll. A crash re-delivers what was not settled, with the same delivery ids
(receivers de-duplicate on ``webhook-id``). The consumer stops fetching while more than
``max_inflight`` records are unsettled; a lane whose target is slower than the stream spills
its queue to Redis, so that limit is reached only when Redis itself is slow.

A record with a ``subscription`` header (backfill, DLQ redelivery) is for that subscription
only. Subscriptions are hot-reloaded from the registry; a deleted one's lane stops at once and
its parked records are dropped. A ``withbackfill`` subscription is backfilled by the first
worker that sees it (``processor.delivery_admin.backfill``, progress in Redis).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord
from redis.asyncio import Redis

from processor import delivery_admin
from processor.clock import Clock, wall_ms
from processor.domain.subscriptions import Subscription, matches
from processor.domain.transitions import Transition
from processor.metrics import DeliveryMetrics
from processor.settings import Settings
from processor.sinks.base import DeliveryResult, Sink
from processor.sinks.http1 import Http1Client
from processor.sinks.kafka import KafkaSink
from processor.sinks.kinesis import KinesisSink
from processor.sinks.lane import LaneItem, LanePolicy, SubscriptionLane
from processor.sinks.webhook import WebhookSink
from processor.state.deliveries import BackfillStore, ParkStore
from processor.state.registry import Registry
from processor.streams import kafka

log = logging.getLogger(__name__)

TARGET_HEADER = delivery_admin.TARGET_HEADER
_DRAIN_S = 5.0  # on stop, how long lanes may take to settle what they hold
_BACKFILL_RETRY_MS = 5_000
_WEBHOOK_RETRY_SINKS = 16
# Live webhook requests in flight per subscription (one connection each, kept alive). One POST
# per transition, so this bounds a subscription's rate at slots / round trip: 256 allow ~5k/s
# to an endpoint 50 ms away. On loopback at 5k/s, 64 were all busy for 30% of the records
# (a receiver's loop pausing a few ms holds every slot), which queued them: p99 120 -> 97 ms.
_WEBHOOK_LIVE_SLOTS = 256
# Kinesis: two PutRecords calls in flight (each in its own thread) overlap one's round trip
# with the next batch's encoding.
_KINESIS_LIVE_SLOTS = 2
# Offsets are committed at most this often (and whenever the consumer is idle): a crash
# re-delivers what settled since the last commit, with the same delivery ids. The commit runs
# beside the loop (one at a time): awaiting its round trip there held up every record behind it.
_COMMIT_EVERY_S = 0.05


@dataclass(slots=True)
class _Partition:
    consumed: int = -1  # next offset after the last one consumed
    remaining: dict[int, int] = field(default_factory=dict)
    order: deque[int] = field(default_factory=deque)
    committed: int = -1

    def settle(self, offset: int) -> None:
        left = self.remaining.get(offset)
        if left is not None:
            self.remaining[offset] = left - 1


class OffsetTracker:
    """Per partition, which consumed offsets every lane has settled; see the module doc."""

    def __init__(self) -> None:
        self._parts: dict[TopicPartition, _Partition] = {}

    def track(self, tp: TopicPartition, offset: int, lanes: int) -> Callable[[], None]:
        """Note a consumed record submitted to ``lanes`` lanes; each calls the result once."""
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = _Partition()
        part.consumed = offset + 1
        if lanes:
            part.remaining[offset] = lanes
            part.order.append(offset)
        # Bound to this partition object: acks arriving after a revoke touch nothing live.
        return lambda: part.settle(offset)

    @property
    def outstanding(self) -> int:
        return sum(len(p.order) for p in self._parts.values())

    def committable(self) -> dict[TopicPartition, int]:
        """Offsets to commit now (only those that moved since the last ``committed``)."""
        out = {}
        for tp, part in self._parts.items():
            while part.order and part.remaining[part.order[0]] <= 0:
                del part.remaining[part.order.popleft()]
            point = part.order[0] if part.order else part.consumed
            if point > part.committed:
                out[tp] = point
        return out

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            if tp in self._parts:
                self._parts[tp].committed = offset

    def drop(self, tps: list[TopicPartition]) -> None:
        for tp in tps:
            self._parts.pop(tp, None)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: DeliveryWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._worker.commit()
        self._worker.tracker.drop(revoked)
        gone = {tp.partition for tp in revoked}
        self._worker.assigned -= gone
        for lane in self._worker.lanes.values():
            lane.revoke(gone)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._worker.assigned |= {tp.partition for tp in assigned}
        for lane in self._worker.lanes.values():
            await lane.assign(self._worker.assigned)
        log.info("delivery assigned %s", sorted(self._worker.assigned))


class DeliveryWorker:
    """Consumes ``transitions`` and feeds every subscription's lane; see the module doc.

    ``metrics_port``: serve Prometheus ``/metrics`` there (0 = any free port, read back from
    ``metrics_port`` after start); ``None`` = no HTTP server (the metrics are still kept).
    """

    def __init__(self, settings: Settings, redis: Redis, clock: Clock = wall_ms, *,
                 metrics_port: int | None = None, metrics_addr: str = "0.0.0.0",  # noqa: S104
                 policy: LanePolicy | None = None, max_inflight: int = 50_000) -> None:
        self.settings = settings
        self.redis = redis
        self.registry = Registry(redis)
        self.parks = ParkStore(redis)
        self.clock = clock
        self.policy = policy or LanePolicy()
        self.max_inflight = max_inflight
        self.metrics = DeliveryMetrics()
        self.metrics_port = metrics_port
        self._metrics_addr = metrics_addr
        self.tracker = OffsetTracker()
        self.lanes: dict[str, SubscriptionLane] = {}
        self.assigned: set[int] = set()
        self.worker_id = f"delivery-{socket.gethostname()}-{os.getpid()}"
        self._version = -1
        self._next_registry_check = 0
        self._next_observe = 0.0
        self._backfills: dict[str, asyncio.Task[bool]] = {}
        self._backfill_after: dict[str, int] = {}
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._client: Http1Client | None = None
        self._last_commit = 0.0
        self._commit_lock = asyncio.Lock()
        self._committing: asyncio.Task[dict[TopicPartition, int]] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        await kafka.ensure_topics(self.settings)
        self._producer = kafka.producer(self.settings)
        # One pool for every webhook lane. No pool-wide cap: a stalled target must not take
        # connections other lanes need; each lane bounds its own concurrency.
        self._client = Http1Client(max_idle_per_origin=_WEBHOOK_LIVE_SLOTS + _WEBHOOK_RETRY_SINKS)
        self._consumer = kafka.consumer(self.settings, self.settings.delivery_group,
                                        [self.settings.transitions_topic], _Rebalance(self))
        await self._producer.start()
        if self.metrics_port is not None:
            self.metrics_port = self.metrics.serve(self.metrics_port, self._metrics_addr)
        await self._consumer.start()
        # Start-up objects (modules, models, clients) leave the collector's generations: the
        # per-record garbage is young, and full collections no longer walk all of them.
        gc.freeze()
        try:
            await self._loop(stop)
        finally:
            await self._shutdown()

    async def _loop(self, stop: asyncio.Event) -> None:
        assert self._consumer is not None
        first = True
        while not stop.is_set():
            await self._refresh_subscriptions()
            if first:
                await self._drop_orphans()
                first = False
            if self.tracker.outstanding < self.max_inflight:
                batch = await self._consumer.getmany(timeout_ms=self.settings.batch_timeout_ms,
                                                     max_records=self.settings.batch_max_records)
                if batch:
                    await self.dispatch(batch)
            else:
                batch = {}
                self._spill_longest()
                await asyncio.sleep(self.settings.batch_timeout_ms / 1000)
            if not batch or time.monotonic() - self._last_commit >= _COMMIT_EVERY_S:
                self._commit_soon()
            await self._observe()
        if self._committing is not None:
            await self._committing
        deadline = time.monotonic() + _DRAIN_S
        while self.tracker.outstanding and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            await self.commit()

    def _spill_longest(self) -> None:
        """The in-flight limit is reached: the lane holding the longest queue parks it, so
        consuming (and every other subscription) goes on."""
        longest = max(self.lanes.values(), key=lambda lane: lane.queued, default=None)
        if longest is not None and longest.queued:
            log.warning("subscription=%s: %d records in flight (limit %d); parking its queue",
                        longest.id, self.tracker.outstanding, self.max_inflight)
            longest.spill()

    async def _shutdown(self) -> None:
        for task in self._backfills.values():
            task.cancel()
        for lane in self.lanes.values():
            await lane.close()
        if self._consumer is not None:
            await self._consumer.stop()
        if self._client is not None:
            await self._client.aclose()
        if self._producer is not None:
            await self._producer.stop()
        self.metrics.close()

    def _commit_soon(self) -> None:
        """Start a commit beside the loop unless one is running (a failed one raises here)."""
        running = self._committing
        if running is not None:
            if not running.done():
                return
            running.result()
        self._last_commit = time.monotonic()
        self._committing = asyncio.create_task(self.commit())

    async def commit(self) -> dict[TopicPartition, int]:
        """Commit every partition up to its lowest unsettled offset; returns what moved."""
        async with self._commit_lock:  # in order: never an older offset after a newer one
            self._last_commit = time.monotonic()
            offsets = self.tracker.committable()
            if offsets and self._consumer is not None:
                await self._consumer.commit(offsets)
                self.tracker.committed(offsets)
            return offsets

    async def dispatch(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        """Submit every record to its lanes; dead-letter unreadable ones (awaited)."""
        bad: list[tuple[bytes, dict[str, str]]] = []
        for tp, records in batch.items():
            for record in records:
                try:
                    transition = Transition.from_json(record.value or b"")
                except ValueError as exc:
                    bad.append((record.value or b"", {"reason": str(exc)}))
                    self.tracker.track(tp, record.offset, 0)
                    continue
                lanes = self._lanes_for(record, transition)
                ack = self.tracker.track(tp, record.offset, len(lanes))
                for lane in lanes:
                    lane.submit(LaneItem(tp.partition, record.offset, record.timestamp,
                                         transition, ack))
        if bad:
            await self._produce_dead(bad)

    def _lanes_for(self, record: ConsumerRecord[bytes, bytes],
                   transition: Transition) -> list[SubscriptionLane]:
        target = _header(record, TARGET_HEADER)
        if target is not None:
            lane = self.lanes.get(target)
            return [lane] if lane and matches(lane.subscription, transition) else []
        return [lane for lane in self.lanes.values() if matches(lane.subscription, transition)]

    async def dead_letter(self, results: list[DeliveryResult]) -> None:
        await self._produce_dead([_dead_letter(r) for r in results])

    async def _produce_dead(self, dead: list[tuple[bytes, dict[str, str]]]) -> None:
        assert self._producer is not None
        futures = [
            await self._producer.send(self.settings.deliveries_dlq_topic, value,
                                      headers=[(k, v.encode()) for k, v in headers.items()])
            for value, headers in dead
        ]
        await asyncio.gather(*futures)
        log.warning("dead-lettered %d deliveries; first: %s", len(dead), dead[0][1]["reason"])

    # subscriptions -----------------------------------------------------------------------
    async def _refresh_subscriptions(self) -> None:
        now = self.clock()
        if now < self._next_registry_check:
            return
        self._next_registry_check = now + self.settings.registry_poll_ms
        version = await self.registry.version()
        if version != self._version:
            loaded: dict[str, Subscription] = {}
            for sub_id, doc in (await self.registry.all("subscriptions")).items():
                try:
                    loaded[sub_id] = Subscription.model_validate(doc)
                except ValueError:
                    log.exception("subscription %s is invalid in the registry; skipped", sub_id)
            await self._apply_subscriptions(loaded)
            self._version = version
            log.info("registry version %d: %d subscriptions", version, len(loaded))
        for subscription in self._pending_backfills():
            self._start_backfill(subscription)
        await self.registry.report_loaded(self.worker_id, self._version, now)

    async def _apply_subscriptions(self, loaded: dict[str, Subscription]) -> None:
        for sub_id in list(self.lanes):
            current = loaded.get(sub_id)
            if current is None or current.channel != self.lanes[sub_id].subscription.channel:
                await self._remove_lane(sub_id, deleted=current is None)
        for sub_id, subscription in loaded.items():
            if sub_id in self.lanes:
                self.lanes[sub_id].subscription = subscription  # picked up by the next record
            else:
                lane = self._make_lane(subscription)
                await lane.start(self.assigned)
                self.lanes[sub_id] = lane

    async def _remove_lane(self, sub_id: str, *, deleted: bool) -> None:
        """Stop a lane at once, forgetting its queue and parked records (a changed channel
        counts as delete + create: records parked for the old target are not re-routed)."""
        lane = self.lanes.pop(sub_id)
        await lane.close(drop_parked=True, partitions=range(self._partition_count()))
        self.metrics.forget(sub_id)
        task = self._backfills.pop(sub_id, None)
        if task is not None:
            task.cancel()
        if deleted:
            await BackfillStore(self.redis).reset(sub_id)
        log.info("subscription %s removed: its deliveries stopped", sub_id)

    async def _drop_orphans(self) -> None:
        """Parked records of subscriptions deleted while no worker ran."""
        for name in await self.parks.orphans(set(self.lanes)):
            await self.redis.delete(name)
            log.info("dropped parked records of a deleted subscription: %s", name)

    def _partition_count(self) -> int:
        assert self._consumer is not None
        found = self._consumer.partitions_for_topic(self.settings.transitions_topic)
        return max(len(found or ()), self.settings.partitions)

    def _make_lane(self, subscription: Subscription) -> SubscriptionLane:
        slots, chunk = _live_shape(subscription, self.policy)
        return SubscriptionLane(
            subscription,
            live=[self._sink(subscription, self.policy.in_place_attempts) for _ in range(slots)],
            retry=[self._sink(subscription, 1) for _ in range(_retry_pool_size(subscription))],
            parks=self.parks, dead_letter=self.dead_letter,
            metrics=self.metrics, policy=self.policy, chunk=chunk)

    def _sink(self, subscription: Subscription, attempts: int) -> Sink:
        budget = self.policy.in_place_budget_s
        if subscription.channel == "webhook":
            return WebhookSink(timeout_s=self.settings.webhook_timeout_s, max_attempts=attempts,
                               max_elapsed_s=budget, allow_private=self.settings.webhook_allow_private,
                               allow_loopback=self.settings.webhook_allow_loopback,
                               client=self._client, park_retriable=True, concurrency=1)
        if subscription.channel == "kafka":
            return KafkaSink(bootstrap_servers=self.settings.kafka_bootstrap_servers,
                             max_attempts=attempts, max_elapsed_s=budget, park_retriable=True)
        return KinesisSink(endpoint_url=self.settings.kinesis_endpoint_url, max_attempts=attempts,
                           max_elapsed_s=budget, park_retriable=True)

    # backfill ----------------------------------------------------------------------------
    def _pending_backfills(self) -> list[Subscription]:
        now = self.clock()
        return [lane.subscription for sub_id, lane in self.lanes.items()
                if lane.subscription.withbackfill and sub_id not in self._backfills
                and self._backfill_after.get(sub_id, 0) <= now]

    def _start_backfill(self, subscription: Subscription) -> None:
        assert self._producer is not None
        task = asyncio.create_task(delivery_admin.backfill(
            self.redis, self._producer, self.settings, subscription, owner=self.worker_id,
            clock=self.clock))
        self._backfills[subscription.id] = task
        task.add_done_callback(functools.partial(self._backfill_ended, subscription.id))

    def _backfill_ended(self, sub_id: str, task: asyncio.Task[bool]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is None and task.result():
            return  # done: stays in _backfills, never started again by this worker
        if error is not None:
            log.error("backfill of %s failed: %r; will resume", sub_id, error)
        self._backfills.pop(sub_id, None)
        self._backfill_after[sub_id] = self.clock() + _BACKFILL_RETRY_MS

    # metrics -----------------------------------------------------------------------------
    async def _observe(self) -> None:
        now = time.monotonic()
        if now < self._next_observe or self._consumer is None:
            return
        self._next_observe = now + 1.0
        wall = self.clock()
        for sub_id, lane in self.lanes.items():
            oldest = lane.oldest_pending_ms()
            self.metrics.lag.labels(sub_id).set(0 if oldest is None else max(0, wall - oldest) / 1000)
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            if high is not None:
                position = await self._consumer.position(tp)
                self.metrics.consumer_lag.labels(str(tp.partition)).set(max(0, high - position))


def _live_shape(subscription: Subscription, policy: LanePolicy) -> tuple[int, int]:
    """(live slots, records per flush): webhooks send each transition as soon as it arrives,
    on many keep-alive connections; Kinesis and Kafka send batches."""
    if subscription.channel == "webhook":
        return _WEBHOOK_LIVE_SLOTS, 1
    if subscription.channel == "kinesis":
        return _KINESIS_LIVE_SLOTS, policy.chunk
    return 1, policy.chunk


def _retry_pool_size(subscription: Subscription) -> int:
    # Webhook retry sinks are cheap (they share the worker's connection pool) and a stalled request
    # holds one for its whole timeout; Kafka and Kinesis sinks each own a client, and those
    # services answer fast, so one is enough.
    return _WEBHOOK_RETRY_SINKS if subscription.channel == "webhook" else 1


def _header(record: ConsumerRecord[bytes, bytes], name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name:
            return bytes(value).decode(errors="replace")
    return None


def _dead_letter(result: DeliveryResult) -> tuple[bytes, dict[str, str]]:
    delivery = result.delivery
    value = orjson.dumps({
        "delivery_id": delivery.id,
        "subscription_id": delivery.subscription.id,
        "channel": delivery.subscription.channel,
        "attempts": result.attempts,
        "reason": result.reason,
        "transition": orjson.loads(delivery.transition.to_json()),
    })
    return value, {"reason": result.reason or "unknown", "subscription_id": delivery.subscription.id}
