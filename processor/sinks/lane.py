"""``SubscriptionLane``: one subscription's own path to its target, isolated from the others.

Each subscription gets a lane: its own sinks (webhook lanes share one httpx connection pool),
its own queue, its own retry state. A slow or failing target fills only its own lane.

A record handed to ``submit`` is *settled* (its ``ack`` called exactly once) when it is
delivered, dead-lettered, or **parked**: written to Redis (``ParkStore``) for background retry.
The worker commits an offset only when every lane settled the record, so a crash never loses
one; it may deliver one twice, with the same delivery id.

How a record travels:

1. *Live*: records are taken from the queue in chunks and flushed through the live sink, which
   retries in place only briefly (``LanePolicy.in_place_*``). Delivered -> ack. Dead (a
   non-retriable answer) -> dead-letter, ack. ``retry`` -> park, ack.
2. *Parked*: once an entity has a parked record, its later records for this subscription are
   parked behind it (never sent live), so per-entity order holds. Parked records of an entity
   are retried in offset order, one at a time, after ``backoff_delay`` (or the target's
   ``Retry-After``), and never while a live record of that entity is in flight. Entities drain
   independently (a pool of retry sinks), so one stalled request holds up only its entity. After
   ``max_attempts`` or ``retry_budget_s`` -> dead-letter with the reason.
3. *Spill*: when the queue grows past ``spill_at`` (the target is slower than the stream), the
   queued records are parked at once, so the worker keeps committing and consuming for every
   other subscription.

Parked records live per (subscription, partition); the lane retries those of the partitions
``assign``-ed to this worker. ``close(drop_parked=True)`` (subscription deleted) stops at once and
forgets them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from processor.domain.backoff import backoff_delay
from processor.domain.payloads import Delivery
from processor.domain.subscriptions import Subscription
from processor.domain.transitions import Transition
from processor.metrics import DeliveryMetrics
from processor.sinks.base import DeliveryResult, Sink
from processor.sinks.errors import DeliveryFailed
from processor.state.deliveries import ParkedRecord, ParkStore

log = logging.getLogger(__name__)

DeadLetter = Callable[[list[DeliveryResult]], Awaitable[None]]
EntityKey = tuple[int, str]  # (partition, entity)


@dataclass(frozen=True, slots=True)
class LanePolicy:
    """How long a lane tries in place, how long in the background, and when it spills."""

    in_place_attempts: int = 2
    in_place_budget_s: float = 2.0
    max_attempts: int = 20  # in total, in place and in the background
    retry_budget_s: float = 3600.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 60.0
    chunk: int = 500
    spill_at: int = 2000
    # ... and only once the oldest queued record has waited this long: a backlog a healthy
    # target is draining stays on the fast live path instead of the one-at-a-time retry path.
    spill_after_s: float = 5.0
    tick_s: float = 0.1


@dataclass(slots=True)
class LaneItem:
    """One consumed record for one lane; ``ack`` is called once it is settled."""

    partition: int
    offset: int
    timestamp_ms: int
    transition: Transition
    ack: Callable[[], None]
    queued_at: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> EntityKey:
        return (self.partition, str(self.transition.entity))


class SubscriptionLane:
    """See the module docstring. ``live`` and ``retry`` are unstarted sinks built with
    ``park_retriable=True``; each ``retry`` sink makes one attempt per flush, and as many
    entities drain at once as there are retry sinks."""

    def __init__(self, subscription: Subscription, *, live: Sink, retry: list[Sink],
                 parks: ParkStore,
                 dead_letter: DeadLetter, metrics: DeliveryMetrics, policy: LanePolicy,
                 rng: random.Random | None = None,
                 wall_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> None:
        self.subscription = subscription
        if not retry:
            raise ValueError("a lane needs at least one retry sink")
        self._live, self._retry_sinks = live, retry
        self._retry_pool: asyncio.Queue[Sink] = asyncio.Queue()
        self._draining: set[EntityKey] = set()
        self._drains: set[asyncio.Task[None]] = set()
        self._parks = parks
        self._dead_letter = dead_letter
        self._metrics = metrics
        self._policy = policy
        self._rng = rng or random.Random()
        self._wall_ms = wall_ms
        self._queue: deque[LaneItem] = deque()
        self._wake = asyncio.Event()
        self._inflight: Counter[EntityKey] = Counter()
        self._inflight_items: list[LaneItem] = []
        self._held: dict[EntityKey, list[ParkedRecord]] = {}
        self._due: dict[EntityKey, float] = {}
        self._partitions: set[int] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._spilling: asyncio.Task[None] | None = None
        self._unsettled: dict[int, LaneItem] = {}

    @property
    def id(self) -> str:
        return self.subscription.id

    async def start(self, partitions: Iterable[int]) -> None:
        await self._live.start()
        for sink in self._retry_sinks:
            await sink.start()
            self._retry_pool.put_nowait(sink)
        await self.assign(partitions)
        self._tasks = [asyncio.create_task(self._live_loop(), name=f"lane-live-{self.id}"),
                       asyncio.create_task(self._retry_loop(), name=f"lane-retry-{self.id}")]

    async def assign(self, partitions: Iterable[int]) -> None:
        """Take over the parked records of ``partitions`` (this worker owns them now)."""
        for partition in set(partitions) - self._partitions:
            for record in await self._parks.load(self.id, partition):
                self._held.setdefault((partition, str(record.transition.entity)), []).append(record)
            self._partitions.add(partition)
        self._metrics.parked.labels(self.id).set(self.parked_count)

    def revoke(self, partitions: Iterable[int]) -> None:
        """Stop retrying the parked records of ``partitions`` (another worker owns them)."""
        gone = set(partitions)
        self._partitions -= gone
        for key in [k for k in self._held if k[0] in gone]:
            del self._held[key]
            self._due.pop(key, None)

    def submit(self, item: LaneItem) -> None:
        """Queue a record (no I/O). Spills to Redis when the target falls behind (policy)."""
        self._unsettled[id(item)] = item
        self._queue.append(item)
        self._wake.set()
        self._maybe_spill(time.monotonic())

    def _maybe_spill(self, now: float) -> None:
        """Park the queue when it is long and its head has waited too long: the target is
        slower than the stream. Checked on submit and on every retry tick (a stalled target
        gets no new records once the worker's in-flight budget is spent)."""
        if (self._spilling is None and len(self._queue) > self._policy.spill_at
                and now - self._queue[0].queued_at > self._policy.spill_after_s):
            self._spilling = asyncio.create_task(self._spill())

    @property
    def parked_count(self) -> int:
        return sum(len(records) for records in self._held.values())

    def oldest_pending_ms(self) -> int | None:
        """Kafka timestamp of the oldest record not delivered yet (queued, in flight, parked)."""
        stamps = [r.timestamp_ms for rs in self._held.values() for r in rs[:1]]
        stamps += [i.timestamp_ms for i in self._inflight_items[:1]]
        stamps += [self._queue[0].timestamp_ms] if self._queue else []
        return min(stamps) if stamps else None

    async def close(self, *, drop_parked: bool = False, partitions: Iterable[int] = ()) -> None:
        """Stop the lane. ``drop_parked`` (subscription deleted): settle everything queued or
        in flight without delivering it and forget its parked records. Otherwise unsettled
        records stay uncommitted, to be consumed again by the next owner."""
        tasks = [*self._tasks, *self._drains, *([self._spilling] if self._spilling else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if drop_parked:
            for item in list(self._unsettled.values()):
                self._settle(item)
            self._queue.clear()
            self._held.clear()
            await self._parks.drop(self.id, partitions)
        await self._live.close()
        for sink in self._retry_sinks:
            await sink.close()

    # live path ---------------------------------------------------------------------------
    async def _live_loop(self) -> None:
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            items = [self._queue.popleft() for _ in range(min(self._policy.chunk, len(self._queue)))]
            behind = [i for i in items if i.key in self._held]
            live = [i for i in items if i.key not in self._held]
            if behind:
                await self._park([(i, 0, "parked behind an earlier record of its entity")
                                  for i in behind])
            if live:
                await self._deliver_live(live)

    async def _deliver_live(self, items: list[LaneItem]) -> None:
        added: list[LaneItem] = []
        refused: list[tuple[LaneItem, DeliveryResult]] = []
        for item in items:
            delivery = Delivery(self.subscription, item.transition)
            try:
                await self._live.add(delivery)
            except DeliveryFailed as exc:
                refused.append((item, DeliveryResult(delivery, "dead", 0, exc.reason)))
                continue
            added.append(item)
            self._inflight[item.key] += 1
        self._inflight_items = added
        try:
            results = await self._live.flush() if added else []
        finally:
            self._inflight.subtract(i.key for i in added)
            self._inflight += Counter()  # drop zero counts
            self._inflight_items = []
        parked: list[tuple[LaneItem, int, str]] = []
        dead = refused[:]
        for item, result in zip(added, results, strict=True):
            self._metrics.retried.labels(self.id).inc(max(0, result.attempts - 1))
            if result.outcome == "retry":
                if result.attempts:  # 0: never sent, waits behind a parked record
                    self._due[item.key] = time.monotonic() + self._delay(result.attempts, result)
                parked.append((item, result.attempts, result.reason or "retriable failure"))
            elif result.outcome == "dead":
                dead.append((item, result))
            else:
                self._metrics.delivered.labels(self.id).inc()
                self._settle(item)
        if dead:
            await self._dead([result for _, result in dead])
            for item, _ in dead:
                self._settle(item)
        if parked:
            await self._park(parked)

    async def _park(self, entries: list[tuple[LaneItem, int, str]]) -> None:
        """Hold the entities at once (later records queue behind), store, then ack."""
        now = self._wall_ms()
        records = []
        for item, attempts, reason in entries:
            record = ParkedRecord(item.partition, item.offset, item.timestamp_ms, item.transition,
                                  attempts, now, reason)
            queue = self._held.setdefault(item.key, [])
            queue.append(record)
            queue.sort(key=lambda r: r.offset)
            records.append(record)
        await self._parks.save(self.id, records)
        self._metrics.parked_total.labels(self.id).inc(len(records))
        self._metrics.parked.labels(self.id).set(self.parked_count)
        for item, _, _ in entries:
            self._settle(item)

    async def _spill(self) -> None:
        try:
            items = list(self._queue)
            self._queue.clear()
            log.warning("subscription=%s: target slower than the stream; parking %d records",
                        self.id, len(items))
            await self._park([(i, 0, "spilled: the target was slower than the stream")
                              for i in items])
        finally:
            self._spilling = None

    # background retries ------------------------------------------------------------------
    async def _retry_loop(self) -> None:
        """Start a drain for every due entity, as many at once as there are retry sinks x 2
        (the rest wait for the next tick)."""
        limit = 2 * len(self._retry_sinks)
        while True:
            await asyncio.sleep(self._policy.tick_s)
            now = time.monotonic()
            self._maybe_spill(now)
            for key in list(self._held):
                if len(self._draining) >= limit:
                    break
                if key not in self._draining and self._can_retry(key, now):
                    self._draining.add(key)
                    task = asyncio.create_task(self._drain(key))
                    self._drains.add(task)
                    task.add_done_callback(self._drains.discard)

    def _can_retry(self, key: EntityKey, now: float) -> bool:
        records = self._held.get(key)
        if not records or not records[0].stored or key[0] not in self._partitions:
            return False
        return not self._inflight.get(key) and self._due.get(key, 0.0) <= now

    async def _drain(self, key: EntityKey) -> None:
        """Retry one entity's parked records in offset order until one fails (it is then due
        again after a backoff) or none is left. Entities drain independently: a stalled
        request holds up only its own entity."""
        try:
            while self._can_retry(key, time.monotonic()):
                head = self._held[key][0]
                sink = await self._retry_pool.get()
                try:
                    await sink.add(Delivery(self.subscription, head.transition))
                    [result] = await sink.flush()
                finally:
                    self._retry_pool.put_nowait(sink)
                if not await self._after_retry(key, head, result):
                    return
        except Exception:  # Redis or sink trouble: the entity is tried again on a later tick
            log.exception("subscription=%s: retry of %s failed", self.id, key[1])
        finally:
            self._draining.discard(key)

    async def _after_retry(self, key: EntityKey, head: ParkedRecord,
                           result: DeliveryResult) -> bool:
        """Record one retry's outcome; True when the head record is settled (next one due)."""
        head.attempts += max(1, result.attempts)
        self._metrics.retried.labels(self.id).inc()
        if result.outcome == "retry" and not self._spent(head):
            head.reason = result.reason or head.reason
            self._due[key] = time.monotonic() + self._delay(head.attempts, result)
            await self._parks.save(self.id, [head])
            return False
        if result.outcome == "delivered":
            self._metrics.delivered.labels(self.id).inc()
        else:
            await self._dead([self._final(result, head)])
        await self._parks.remove(self.id, [head])
        held = self._held.get(key)  # gone if the partition was revoked meanwhile
        if held is not None and head in held:
            held.remove(head)
            if not held:
                del self._held[key]
                self._due.pop(key, None)
        self._metrics.parked.labels(self.id).set(self.parked_count)
        return True

    def _spent(self, record: ParkedRecord) -> bool:
        elapsed_s = (self._wall_ms() - record.first_failed_ms) / 1000
        return record.attempts >= self._policy.max_attempts or elapsed_s >= self._policy.retry_budget_s

    def _final(self, result: DeliveryResult, record: ParkedRecord) -> DeliveryResult:
        if result.outcome == "dead":
            return DeliveryResult(result.delivery, "dead", record.attempts, result.reason)
        elapsed_s = (self._wall_ms() - record.first_failed_ms) / 1000
        return DeliveryResult(result.delivery, "dead", record.attempts,
                              f"gave up after {record.attempts} attempts over {elapsed_s:.0f}s: "
                              f"{result.reason}")

    def _delay(self, attempts: int, result: DeliveryResult) -> float:
        policy = self._policy
        delay = backoff_delay(attempts, base=policy.backoff_base_s, cap=policy.backoff_cap_s,
                              rng=self._rng)
        return max(delay, result.retry_after or 0.0)

    def _settle(self, item: LaneItem) -> None:
        if self._unsettled.pop(id(item), None) is not None:
            item.ack()

    async def _dead(self, results: list[DeliveryResult]) -> None:
        await self._dead_letter(results)
        self._metrics.dead_lettered.labels(self.id).inc(len(results))


def _key(record: ParkedRecord) -> EntityKey:
    return (record.partition, str(record.transition.entity))
