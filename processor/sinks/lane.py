"""``SubscriptionLane``: one subscription's own path to its target, isolated from the others.

Each subscription gets a lane: its own sinks (webhook lanes share one keep-alive connection pool),
its own queue, its own retry state. A slow or failing target fills only its own lane.

A record handed to ``submit`` is *settled* (its ``ack`` called exactly once) when it is
delivered, dead-lettered, or **parked**: written to Redis (``ParkStore``) for background retry.
The worker commits an offset only when every lane settled the record, so a crash never loses
one; it may deliver one twice, with the same delivery id.

How a record travels:

1. *Live*: the lane has one or more live sinks ("slots"). With ``chunk`` > 1 (Kinesis, Kafka:
   one PutRecords / produce batch) each slot has its own task, which takes up to ``chunk``
   records from the queue as soon as they arrive (no batching wait) and flushes them. With
   ``chunk`` 1 (webhooks: one POST per transition, many connections) ``submit`` starts a
   record at once on a free slot (``Sink.send``: no task, future or coroutine per record
   for a webhook that answers 2xx; sinks without ``send`` get a task per record), and a
   settled record's slot starts the next queued one. Either way the sink retries in place
   only briefly (``LanePolicy.in_place_*``). Delivered -> ack. Dead (a non-retriable answer)
   -> dead-letter, ack. ``retry`` -> park, ack. An entity is in flight in one slot at a time:
   its later records wait until that flush is settled, so per-entity order holds while other
   entities go out concurrently.
2. *Parked*: once an entity has a parked record, its later records for this subscription are
   parked behind it (never sent live), so per-entity order holds. Parked records of an entity
   are retried in offset order, one at a time, after ``backoff_delay`` (or the target's
   ``Retry-After``), and never while a live record of that entity is in flight. Entities drain
   independently (a pool of retry sinks), so one stalled request holds up only its entity. After
   ``max_attempts`` or ``retry_budget_s`` -> dead-letter with the reason.
3. *Spill*: when the queue grows past ``spill_at``, its head has waited ``spill_after_s`` and
   the lane settled fewer than ``spill_at`` records in the last ``spill_after_s`` (the target
   is stalled or far slower than the stream), the queued records are parked at once, so the
   worker keeps committing and consuming for every other subscription. A healthy target that
   is draining a backlog is not spilled: the parked path sends one record per entity at a time
   and would only slow it down. The worker also spills the longest queue (``spill``) when its
   in-flight limit is reached.

The ``delivered`` counter is updated on every retry tick (``tick_s``) and on ``close``, not
per record (``flush_metrics`` updates it at once).

Parked records live per (subscription, partition); the lane retries those of the partitions
``assign``-ed to this worker. ``close(drop_parked=True)`` (subscription deleted) stops at once and
forgets them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from processor.domain.backoff import backoff_delay
from processor.domain.payloads import Delivery
from processor.domain.subscriptions import Subscription
from processor.domain.transitions import EntityRef, Transition
from processor.metrics import DeliveryMetrics
from processor.sinks.base import DeliveryResult, Sink
from processor.sinks.errors import DeliveryFailed
from processor.state.deliveries import ParkedRecord, ParkStore

log = logging.getLogger(__name__)

DeadLetter = Callable[[list[DeliveryResult]], Awaitable[None]]
EntityKey = tuple[int, EntityRef]  # (partition, entity)


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
    # ... and only once the oldest queued record has waited this long and the lane settled
    # fewer than ``spill_at`` records in that time: a backlog a healthy target is draining
    # stays on the fast live path instead of the one-at-a-time retry path.
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
        return (self.partition, self.transition.entity)


class SubscriptionLane:
    """See the module docstring. ``live`` and ``retry`` are unstarted sinks built with
    ``park_retriable=True``; each ``retry`` sink makes one attempt per flush, and as many
    entities drain at once as there are retry sinks."""

    def __init__(self, subscription: Subscription, *, live: Sink | Sequence[Sink],
                 retry: list[Sink], parks: ParkStore,
                 dead_letter: DeadLetter, metrics: DeliveryMetrics, policy: LanePolicy,
                 rng: random.Random | None = None, chunk: int | None = None,
                 wall_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> None:
        self.subscription = subscription
        live_sinks = [live] if isinstance(live, Sink) else list(live)
        if not retry or not live_sinks:
            raise ValueError("a lane needs at least one live and one retry sink")
        self._live_sinks, self._retry_sinks = live_sinks, retry
        self._chunk = max(1, chunk or policy.chunk)
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
        self._idle: deque[asyncio.Future[None]] = deque()  # slots waiting for records
        self._inflight: dict[EntityKey, int] = {}
        self._inflight_items: dict[int, LaneItem] = {}
        self._blocked: dict[EntityKey, deque[LaneItem]] = {}  # wait for their entity's flush
        self._m_delivered = metrics.delivered.labels(subscription.id)
        self._m_retried = metrics.retried.labels(subscription.id)
        self._held: dict[EntityKey, list[ParkedRecord]] = {}
        self._due: dict[EntityKey, float] = {}
        self._partitions: set[int] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._spilling: asyncio.Task[None] | None = None
        self._unsettled: dict[int, LaneItem] = {}
        self._closed = False
        self._parked_dirty = False
        # chunk 1: the live sinks not sending a record now; None: slot tasks (chunk > 1)
        self._free: list[Sink] | None = list(live_sinks) if self._chunk == 1 else None
        self._side: set[asyncio.Task[None]] = set()  # parking / dead-lettering of one record
        self._settled = 0  # records delivered live, ever
        self._settled_marks: deque[tuple[float, int]] = deque()  # (monotonic, _settled) per tick
        self._delivered_unreported = 0  # not on the ``delivered`` counter yet

    @property
    def id(self) -> str:
        return self.subscription.id

    async def start(self, partitions: Iterable[int]) -> None:
        for sink in self._live_sinks:
            await sink.start()
        for sink in self._retry_sinks:
            await sink.start()
            self._retry_pool.put_nowait(sink)
        await self.assign(partitions)
        if self._free is None:
            self._tasks = [asyncio.create_task(self._live_slot(sink),
                                               name=f"lane-live-{self.id}-{n}")
                           for n, sink in enumerate(self._live_sinks)]
        self._tasks.append(asyncio.create_task(self._retry_loop(), name=f"lane-retry-{self.id}"))
        self._pump()

    async def assign(self, partitions: Iterable[int]) -> None:
        """Take over the parked records of ``partitions`` (this worker owns them now)."""
        for partition in set(partitions) - self._partitions:
            for record in await self._parks.load(self.id, partition):
                self._held.setdefault((partition, record.transition.entity), []).append(record)
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
        if self._free is None:
            self._wake_one()
        elif self._free:
            self._pump()
        if len(self._queue) > self._policy.spill_at:
            self._maybe_spill(time.monotonic())

    def _maybe_spill(self, now: float) -> None:
        """Park the queue when it is long, its head has waited too long and the lane is not
        draining it (see the module doc). Checked on submit and on every retry tick (a
        stalled target gets no new records once the worker's in-flight budget is spent)."""
        policy = self._policy
        if (self._spilling is None and len(self._queue) > policy.spill_at
                and now - self._queue[0].queued_at > policy.spill_after_s
                and self._recently_settled(now) < policy.spill_at):
            self.spill()

    def _recently_settled(self, now: float) -> int:
        """Records delivered live over (about) the last ``spill_after_s``: since the newest
        per-tick mark at least that old."""
        marks = self._settled_marks
        while len(marks) > 1 and now - marks[1][0] >= self._policy.spill_after_s:
            marks.popleft()
        return self._settled - marks[0][1] if marks else self._settled

    def flush_metrics(self) -> None:
        """Put what was delivered since the last tick on the ``delivered`` counter."""
        if self._delivered_unreported:
            self._m_delivered.inc(self._delivered_unreported)
            self._delivered_unreported = 0

    @property
    def queued(self) -> int:
        return len(self._queue) + sum(len(items) for items in self._blocked.values())

    def spill(self) -> None:
        """Park everything queued now (the worker calls this when its in-flight limit is
        reached and this lane holds the most)."""
        if self._spilling is None and self.queued:
            self._spilling = asyncio.create_task(self._spill())

    @property
    def parked_count(self) -> int:
        return sum(len(records) for records in self._held.values())

    def oldest_pending_ms(self) -> int | None:
        """Kafka timestamp of the oldest record not delivered yet (queued, in flight, parked)."""
        stamps = [r.timestamp_ms for rs in self._held.values() for r in rs[:1]]
        stamps += [i.timestamp_ms for i in self._inflight_items.values()]
        stamps += [items[0].timestamp_ms for items in self._blocked.values() if items]
        stamps += [self._queue[0].timestamp_ms] if self._queue else []
        return min(stamps) if stamps else None

    async def close(self, *, drop_parked: bool = False, partitions: Iterable[int] = ()) -> None:
        """Stop the lane. ``drop_parked`` (subscription deleted): settle everything queued or
        in flight without delivering it and forget its parked records. Otherwise unsettled
        records stay uncommitted, to be consumed again by the next owner."""
        self._closed = True
        self.flush_metrics()
        tasks = [*self._tasks, *self._drains, *self._side,
                 *([self._spilling] if self._spilling else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if drop_parked:
            for item in list(self._unsettled.values()):
                self._settle(item)
            self._queue.clear()
            self._blocked.clear()
            self._held.clear()
            await self._parks.drop(self.id, partitions)
        for sink in self._live_sinks:
            await sink.close()
        for sink in self._retry_sinks:
            await sink.close()

    # live path, one record per send (chunk 1) ----------------------------------------------
    def _pump(self) -> None:
        """Start queued records on free slots. Never re-entered: ``Sink.send`` calls back only
        after it returned, and a record settled in a callback pumps from there."""
        free, queue = self._free, self._queue
        if not free or not queue or self._closed:
            return
        inflight, held = self._inflight, self._held
        behind: list[LaneItem] = []
        while free and queue:
            item = queue.popleft()
            key = item.key
            if key in held:
                behind.append(item)
            elif key in inflight:
                self._blocked.setdefault(key, deque()).append(item)
            else:
                inflight[key] = 1
                self._inflight_items[id(item)] = item
                self._send(free.pop(), item)
        if behind:
            self._aside(self._park([(i, 0, "parked behind an earlier record of its entity")
                                    for i in behind]))

    def _send(self, sink: Sink, item: LaneItem) -> None:
        delivery = Delivery(self.subscription, item.transition)
        try:
            if sink.send(delivery, functools.partial(self._sent, sink, item)):
                return
        except DeliveryFailed as exc:
            self._aside(self._sent_otherwise(sink, item, DeliveryResult(delivery, "dead", 0,
                                                                         exc.reason)))
            return
        self._aside(self._flush_one(sink, item, delivery))

    async def _flush_one(self, sink: Sink, item: LaneItem, delivery: Delivery) -> None:
        """A record on a sink without ``send``: ``add`` + ``flush`` in a task of its own."""
        try:
            await sink.add(delivery)
            [result] = await sink.flush()
        except DeliveryFailed as exc:
            result = DeliveryResult(delivery, "dead", 0, exc.reason)
        except BaseException as exc:  # noqa: BLE001 - handed on, a cancellation re-raised there
            await self._sent_otherwise(sink, item, exc)
            return
        self._sent(sink, item, result)

    def _sent(self, sink: Sink, item: LaneItem, result: DeliveryResult | BaseException) -> None:
        """A record's send ended (often inside the connection's callback)."""
        if self._closed:
            return
        if isinstance(result, DeliveryResult) and result.outcome == "delivered":
            if result.attempts > 1:
                self._m_retried.inc(result.attempts - 1)
            self._settled += 1
            self._delivered_unreported += 1
            if self._unsettled.pop(id(item), None) is not None:
                item.ack()
            self._inflight_items.pop(id(item), None)
            key = item.key
            self._inflight.pop(key, None)  # chunk 1: an entity is in flight once
            waiting = self._blocked.pop(key, None)
            if waiting:
                self._queue.extendleft(reversed(waiting))
            self._free.append(sink)  # type: ignore[union-attr]  # chunk 1
            self._pump()
        else:
            self._aside(self._sent_otherwise(sink, item, result))

    async def _sent_otherwise(self, sink: Sink, item: LaneItem,
                              result: DeliveryResult | BaseException) -> None:
        """Park, dead-letter or requeue one record; its slot and entity stay busy meanwhile."""
        assert self._free is not None
        pause = 0.0
        try:
            if isinstance(result, asyncio.CancelledError):
                if self._closed:
                    raise result
                # Not ours: a library's timeout leaked a cancellation into the delivery
                # (Python 3.11 asyncio.timeout race). The record goes out again.
                log.warning("subscription=%s: stray cancellation; record requeued", self.id)
                self._requeue([item])
            elif isinstance(result, BaseException):
                log.error("subscription=%s: live delivery failed; record requeued", self.id,
                          exc_info=result)
                self._requeue([item])
                pause = 1.0
            else:
                await self._settle_results([item], [result])
                self._release((item,))
        except asyncio.CancelledError:
            raise
        except Exception:  # Redis or the dead-letter topic: the record is tried again
            log.exception("subscription=%s: settling a delivery failed; record requeued", self.id)
            self._requeue([item])
            pause = 1.0
        if pause:
            await asyncio.sleep(pause)
        self._free.append(sink)
        self._pump()

    def _aside(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._side.add(task)
        task.add_done_callback(self._side.discard)

    # live path, slot tasks (chunk > 1) ---------------------------------------------------
    def _wake_one(self) -> None:
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _live_slot(self, sink: Sink) -> None:
        """One slot: take what is queued (up to ``chunk``), deliver it, repeat; sleep while
        the queue is empty (``submit`` wakes one sleeping slot per record)."""
        loop = asyncio.get_running_loop()
        while True:
            items, behind = self._take()
            if behind:
                await self._park([(i, 0, "parked behind an earlier record of its entity")
                                  for i in behind])
            if items:
                try:
                    await self._deliver_live(sink, items)
                except asyncio.CancelledError:
                    if self._closed:
                        raise
                    # Not ours: a library's timeout leaked a cancellation into this task
                    # (Python 3.11 asyncio.timeout race). The slot must survive it.
                    _uncancel()
                    log.warning("subscription=%s: stray cancellation; records requeued", self.id)
                    self._requeue(items)
                except Exception:  # a broken sink or Redis: the records are tried again
                    log.exception("subscription=%s: live delivery failed; records requeued",
                                  self.id)
                    self._requeue(items)
                    await asyncio.sleep(1.0)
            elif not behind:
                waiter = loop.create_future()
                self._idle.append(waiter)
                await waiter

    def _take(self) -> tuple[list[LaneItem], list[LaneItem]]:
        """Up to ``chunk`` queued records for one flush, and the records to park behind a
        parked record of their entity. A record whose entity is in flight in another slot
        waits in ``_blocked`` (same-entity records may share one flush: sinks keep order
        within a flush)."""
        items: list[LaneItem] = []
        behind: list[LaneItem] = []
        taking: set[EntityKey] = set()
        queue, inflight = self._queue, self._inflight
        while queue and len(items) < self._chunk:
            item = queue.popleft()
            key = item.key
            if key in self._held:
                behind.append(item)
            elif key in inflight and key not in taking:
                self._blocked.setdefault(key, deque()).append(item)
            else:
                taking.add(key)
                inflight[key] = inflight.get(key, 0) + 1
                self._inflight_items[id(item)] = item
                items.append(item)
        return items, behind

    def _release(self, items: Sequence[LaneItem]) -> None:
        """``items`` are settled (or requeued): their entities' waiting records go back to
        the head of the queue, in order."""
        inflight = self._inflight
        released = 0
        for item in items:
            self._inflight_items.pop(id(item), None)
            key = item.key
            left = inflight.get(key, 0) - 1
            if left > 0:
                inflight[key] = left
                continue
            inflight.pop(key, None)
            waiting = self._blocked.pop(key, None)
            if waiting:
                self._queue.extendleft(reversed(waiting))
                released += len(waiting)
        for _ in range(min(released, len(self._idle))):
            self._wake_one()

    def _requeue(self, items: list[LaneItem]) -> None:
        unsettled = [i for i in items if id(i) in self._unsettled]
        self._release(items)
        self._queue.extendleft(reversed(unsettled))

    async def _deliver_live(self, sink: Sink, items: list[LaneItem]) -> None:
        added: list[LaneItem] = []
        refused: list[tuple[LaneItem, DeliveryResult]] = []
        for item in items:
            delivery = Delivery(self.subscription, item.transition)
            try:
                await sink.add(delivery)
            except DeliveryFailed as exc:
                refused.append((item, DeliveryResult(delivery, "dead", 0, exc.reason)))
                continue
            added.append(item)
        results = await sink.flush() if added else []
        await self._settle_results(added, results, refused)
        self._release(items)

    async def _settle_results(self, items: list[LaneItem], results: list[DeliveryResult],
                              refused: list[tuple[LaneItem, DeliveryResult]] | None = None,
                              ) -> None:
        """Ack the delivered, park the ``retry`` ones, dead-letter the dead (and ``refused``)."""
        parked: list[tuple[LaneItem, int, str]] = []
        dead = list(refused or ())
        settled: list[LaneItem] = []
        for item, result in zip(items, results, strict=True):
            if result.attempts > 1:
                self._m_retried.inc(result.attempts - 1)
            if result.outcome == "retry":
                if result.attempts:  # 0: never sent, waits behind a parked record
                    self._due[item.key] = time.monotonic() + self._delay(result.attempts, result)
                parked.append((item, result.attempts, result.reason or "retriable failure"))
            elif result.outcome == "dead":
                dead.append((item, result))
            else:
                settled.append(item)
        if settled:
            self._settled += len(settled)
            self._delivered_unreported += len(settled)
            for item in settled:
                self._settle(item)
        if parked:  # held at once (inside _park, before its first await): order is kept
            await self._park(parked)
        if dead:
            await self._dead([result for _, result in dead])
            for item, _ in dead:
                self._settle(item)

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
        self._parked_dirty = True  # the gauge is set on the next tick (counting is O(entities))
        for item, _, _ in entries:
            self._settle(item)

    async def _spill(self) -> None:
        try:
            items = [i for waiting in self._blocked.values() for i in waiting]
            items += self._queue
            self._queue.clear()
            self._blocked.clear()
            log.warning("subscription=%s: target slower than the stream; parking %d records",
                        self.id, len(items))
            await self._park([(i, 0, "spilled: the target was slower than the stream")
                              for i in items])
        finally:
            self._spilling = None

    # background retries ------------------------------------------------------------------
    async def _retry_loop(self) -> None:
        """Every tick: report metrics, spill if needed, start a drain for every due entity."""
        while True:
            await asyncio.sleep(self._policy.tick_s)
            now = time.monotonic()
            self.flush_metrics()
            self._settled_marks.append((now, self._settled))
            self._recently_settled(now)  # drops the marks no longer needed
            self._maybe_spill(now)
            self._pump()
            self._start_drains(now)
            if self._parked_dirty:
                self._parked_dirty = False
                self._metrics.parked.labels(self.id).set(self.parked_count)

    def _start_drains(self, now: float) -> None:
        """A drain for every due entity, as many at once as there are retry sinks x 2 (the
        rest start when a drain ends, or on the next tick)."""
        limit = 2 * len(self._retry_sinks)
        if self._closed:
            return
        for key in self._held:  # starting a task does not change _held
            if len(self._draining) >= limit:
                break
            if key not in self._draining and self._can_retry(key, now):
                self._draining.add(key)
                task = asyncio.create_task(self._drain(key))
                self._drains.add(task)
                task.add_done_callback(self._drain_ended)

    def _drain_ended(self, task: asyncio.Task[None]) -> None:
        self._drains.discard(task)
        if not task.cancelled() and self._held:
            self._start_drains(time.monotonic())

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
        if head.attempts:  # a record spilled or parked behind another is first sent here
            self._m_retried.inc()
        head.attempts += max(1, result.attempts)
        if result.outcome == "retry" and not self._spent(head):
            head.reason = result.reason or head.reason
            self._due[key] = time.monotonic() + self._delay(head.attempts, result)
            await self._parks.save(self.id, [head])
            return False
        if result.outcome == "delivered":
            self._m_delivered.inc()
        else:
            await self._dead([self._final(result, head)])
        await self._parks.remove(self.id, [head])
        held = self._held.get(key)  # gone if the partition was revoked meanwhile
        if held is not None and head in held:
            held.remove(head)
            if not held:
                del self._held[key]
                self._due.pop(key, None)
        self._parked_dirty = True
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


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        while task.uncancel():
            pass


def _key(record: ParkedRecord) -> EntityKey:
    return (record.partition, record.transition.entity)
