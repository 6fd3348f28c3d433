"""The event worker: Kafka ``events`` -> entity state in Redis -> ``transitions``.

Why not a faust agent: faust's per-event stream path costs ~175 µs/event on this machine class
(~5.7k events/s), a quarter of what a raw ``getmany`` loop with one pipelined Redis call per
batch reaches. So the worker consumes with aiokafka in ``getmany`` batches and does all
per-event work in plain Python on an in-process cache of its entities: it is their single
writer (see ``routing``: an entity's events all reach the one worker owning its partition).

Per batch, in this order (a crash between any two steps re-does the batch, never loses it):
  1. decode every record; undecodable ones become dead letters (with the reason); events for
     entities owned elsewhere become forwards on ``events.by-key``;
  2. load the entities not yet cached (one Redis round trip);
  3. apply each event to each of its local entities, skipping source offsets at or below the
     entity's watermark (replays after a crash, a rebalance or a duplicated forward);
  4. produce dead letters, forwards and transitions (transition ids are deterministic, so a
     re-done batch re-produces the same ids), and encode the batch's writes (this takes the
     entities' dirty marks);
  5. await every ack of step 4, then send the writes in one round trip: the member index and
     the due-time schedule (idempotent) first, then each touched entity's changed fields and
     watermarks, atomically per entity;
  6. commit the consumer offsets.
Step 5 runs in a task of its own, chained behind the previous batch's (acks are awaited and
writes land in batch order; a failed produce or write stops the chain and the worker, so
nothing after it is written or committed), while the loop goes on with the next batches:
waiting for acks or a write in the loop would hold every event behind it (at 5k events/s those
waits were most of the produce->transition latency). Step 6 is the committer's: one commit at
a time, beside the writes, of the offsets of every batch written so far (committing in the
chain made each batch's write wait for the previous batch's commit round trip). At most
``WRITES_IN_FLIGHT`` batches are written ahead of the loop. An entity that a write in flight
touches is never reloaded from Redis before that write lands. A batch applied while an earlier
one's records are unacked may produce records of its own; after a crash both are re-done, so
a record is at worst produced twice, with the same id, never lost.
Between batches the scheduler re-evaluates the entities whose due time has come (``due``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from processor.clock import Clock, wall_ms
from processor.domain import engine
from processor.domain.entity import EntityState
from processor.domain.events import Event, EventDecodeError
from processor.domain.identity import identity_values, links_of
from processor.domain.records import RawRecord, decode_record
from processor.domain.topology import Topology
from processor.domain.transitions import EntityRef, Transition
from processor.errors import ConfigError
from processor.settings import Settings
from processor.state import identity, members, reevaluation, schedule
from processor.state.entities import EntityStore, EntityWrite
from processor.state.registry import Registry
from processor.state.resp import Commands, round_trip
from processor.streams import kafka
from processor.streams.routing import (
    SOURCE_HEADER,
    STREAM_HEADER,
    TIMESTAMP_FIELD_HEADER,
    Forward,
    Ownership,
    Source,
    WorkItem,
    decoding_headers,
    header,
    parse_ref,
)

log = logging.getLogger(__name__)

CACHE_MAX_ENTITIES = 200_000
# Young-generation GC threshold: the cache holds millions of small objects and a batch makes
# many short-lived ones; at CPython's default (700) collections cost ~30% of the worker's time.
GC_YOUNG_THRESHOLD = 50_000
DUE_BATCH = 1000
REEVAL_PAGE = 200  # entities per partition per scheduler tick: bounds the background rate
# Records decoded or applied between two yields to the event loop. Decoding and applying are
# synchronous, and the previous batch's write only moves (socket writes, replies) while the loop
# runs: without these yields it would start only when the next batch waits for it.
YIELD_EVERY = 200
# Batches whose acks + write may run behind the loop (see the module doc). At 5k events/s a
# batch's acks and write take longer than applying the next one (~5 ms + a Redis round trip):
# with two, the loop spent ~40% of its time waiting for the oldest; four absorb that.
WRITES_IN_FLIGHT = 4
# Offsets are committed at most this often while batches keep coming (a crash replays at most
# this much more; the watermarks skip it), and whenever the worker settles (idle, revoke, stop).
# A commit per batch was ~4% of the worker's CPU at 5k events/s (batches of ~20 records).
COMMIT_EVERY_S = 0.05
T = TypeVar("T")

Record = ConsumerRecord[bytes, bytes]


@dataclass
class DeadLetter:
    record: Record
    reason: str


@dataclass
class BatchResult:
    events: int = 0
    skipped: int = 0
    late: int = 0
    dead: list[DeadLetter] = field(default_factory=list)
    forwards: list[Forward] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    links: list[tuple[tuple[str, str], EntityRef]] = field(default_factory=list)
    touched: dict[EntityRef, EntityState] = field(default_factory=dict)


@dataclass
class PendingWrite:
    """A batch's Redis writes, encoded when the batch was applied (see the module doc)."""

    entities: EntityWrite
    # acks of the records the batch produced: awaited before the write (see the module doc)
    acks: list[asyncio.Future[object]] = field(default_factory=list)
    links: list[tuple[tuple[str, str], EntityRef]] = field(default_factory=list)
    members: list[tuple[str, EntityRef, bool]] = field(default_factory=list)
    new: list[tuple[int, EntityRef]] = field(default_factory=list)  # first write: join the index
    due: list[tuple[int, EntityRef, int | None]] = field(default_factory=list)

    def stage(self, commands: Commands) -> None:
        """The idempotent index and schedule commands that go ahead of the entity writes."""
        for (name, value), profile in self.links:
            identity.stage_link(commands, name, value, profile)
        members.stage(commands, self.members)
        reevaluation.stage_entities(commands, self.new)
        schedule.stage(commands, self.due)


@dataclass
class InFlight:
    """A batch's acks and write, running while the next batches are applied."""

    task: asyncio.Task[None]
    refs: set[EntityRef]


class _DropCacheOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: EventWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Finish and commit what was applied, then forget the cached entities: another worker
        # may own them next and our copies would go stale.
        await self._worker.settle()
        self._worker.forget()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("assigned %s", sorted(f"{tp.topic}/{tp.partition}" for tp in assigned))


class EventWorker:
    """Single writer of the entities of the partitions it is assigned."""

    def __init__(self, settings: Settings, redis: Redis, clock: Clock = wall_ms) -> None:
        self.settings = settings
        self.redis = redis
        self.store = EntityStore(redis)
        self.registry = Registry(redis)
        self.clock = clock
        self.cache: dict[EntityRef, EntityState] = {}
        self.links: dict[tuple[str, str], EntityRef] = {}  # identity -> profile, first come wins
        self.topology = Topology()
        self.ownership = Ownership(settings.partitions)
        self.identities = settings.identities  # profiles are entities of the first (stitching)
        self.stats = {"events": 0, "dead": 0, "transitions": 0, "skipped": 0, "batches": 0,
                      "forwarded": 0, "ignored": 0, "due": 0, "late": 0}
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}"
        # wall seconds spent per batch phase: where the time goes (the benchmark prints it)
        # ("persist" is the wait for the previous batch's write: the part not overlapped)
        self.seconds = dict.fromkeys(
            ("decode", "load", "apply", "produce", "encode", "persist"), 0.0
        )
        self._in_flight: deque[InFlight] = deque()  # oldest first
        # offsets whose batches are written, and those committed (see ``_commit_soon``)
        self._durable: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._committing: asyncio.Task[None] | None = None
        self._last_commit = 0.0
        self._settling = asyncio.Lock()
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._next_registry_check = 0.0
        self._next_due_check = 0.0
        # Owner partitions on ``transitions`` (Kafka's default partitioner, murmur2 of the
        # entity key, memoised: the worker names each transition's partition itself)
        self._transition_owner = self.ownership

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; commits only after each batch is durable."""
        await kafka.ensure_topics(self.settings)
        topics = [self.settings.events_topic, self.settings.keyed_topic]
        self._producer = kafka.producer(self.settings)
        self._consumer = kafka.consumer(
            self.settings, self.settings.worker_group, topics, _DropCacheOnRevoke(self)
        )
        await self._producer.start()
        await self._consumer.start()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        try:
            await self._check_copartitioned(topics)
            count = len(await self._producer.partitions_for(self.settings.transitions_topic))
            if count != self.settings.partitions:
                self._transition_owner = Ownership(count)
            while not stop.is_set():
                await self._refresh_topology()
                batch = await self._consumer.getmany(
                    timeout_ms=self.settings.batch_timeout_ms,
                    max_records=self.settings.batch_max_records,
                )
                if batch:
                    await self._write_behind(batch, *await self.apply_batch(batch))
                else:
                    await self.settle()  # idle: no reason to hold the last commit back
                await self.run_due()
            await self.settle()
        finally:
            await self._consumer.stop()
            await self._producer.stop()

    async def _check_copartitioned(self, topics: list[str]) -> None:
        assert self._producer is not None
        counts = {t: len(await self._producer.partitions_for(t)) for t in topics}
        if len(set(counts.values())) != 1 or self.settings.partitions not in counts.values():
            raise ConfigError(
                f"topics {counts} must all have SIGNALBOX_PARTITIONS="
                f"{self.settings.partitions} partitions (entities are owned by partition number)"
            )

    async def _refresh_topology(self) -> None:
        # Polling intervals run on the wall clock; only segment date math uses ``self.clock``.
        tick = time.monotonic()
        if tick < self._next_registry_check:
            return
        self._next_registry_check = tick + self.settings.registry_poll_ms / 1000
        now = self.clock()
        version = await _retry_redis(self.registry.version)
        if version != self.topology.version:
            previous = self.topology
            try:
                self.topology = await _retry_redis(self.registry.topology)
            except Exception:  # a definition that cannot run must not stop the worker
                log.exception("registry version %d cannot be compiled; keeping %d",
                              version, self.topology.version)
            if _segments_changed(previous, self.topology):
                for partition in self._owned():
                    await _retry_redis(lambda p=partition: reevaluation.start(
                        self.redis, p, self.topology.version))
            log.info("topology version %d: %d groups, %d segments", self.topology.version,
                     len(self.topology.groups), len(self.topology.segments))
        await _retry_redis(lambda: self.registry.report_loaded(
            self.worker_id, self.topology.version, now))

    async def apply_batch(
        self, batch: dict[TopicPartition, list[Record]]
    ) -> tuple[PendingWrite, dict[TopicPartition, int]]:
        """Steps 1-4 of one batch, and its encoded write; returns that and the offsets to
        commit once the write is done."""
        result = BatchResult()
        clock = time.perf_counter
        t0 = clock()
        items = await self._route([r for rs in batch.values() for r in rs], result)
        t1 = clock()
        await self._load_missing(ref for item in items for ref in item.refs)
        t2 = clock()
        now = self.clock()
        await self._apply_all(items, result, now)
        t3 = clock()
        acks = await self._produce(result)
        t4 = clock()
        write = self._encode(list(result.touched.values()), result.transitions, now, result.links)
        write.acks = acks
        t5 = clock()
        for phase, spent in (("decode", t1 - t0), ("load", t2 - t1), ("apply", t3 - t2),
                             ("produce", t4 - t3), ("encode", t5 - t4)):
            self.seconds[phase] += spent
        self._count(result)
        return write, {tp: rs[-1].offset + 1 for tp, rs in batch.items()}

    def forget(self) -> None:
        """Drop what is cached of the entities and offsets (partitions were revoked)."""
        self.cache.clear()
        self._durable.clear()
        self._committed.clear()

    async def _write_behind(self, batch: dict[TopicPartition, list[Record]], write: PendingWrite,
                            offsets: dict[TopicPartition, int]) -> None:
        """Queue this batch's write and commit behind the previous batch's (steps 5-6)."""
        flights = self._in_flight
        self._reap()
        if len(flights) >= WRITES_IN_FLIGHT:
            started = time.perf_counter()
            await asyncio.wait([flights[0].task])
            self.seconds["persist"] += time.perf_counter() - started
            self._reap()
        previous = flights[-1].task if flights else None
        task = asyncio.create_task(self._write_in_turn(previous, write, offsets, batch))
        flights.append(InFlight(task, set(write.entities.refs)))
        await asyncio.sleep(0)  # start sending it now, not at the next await that suspends

    async def _write_in_turn(self, previous: asyncio.Task[None] | None, write: PendingWrite,
                                offsets: dict[TopicPartition, int],
                                batch: dict[TopicPartition, list[Record]]) -> None:
        """Step 5 for one batch once the previous batch's is done (a failure there fails this
        one too, unwritten and uncommitted), then step 6 handed to the committer: the next
        batch's write does not wait for this commit's round trip."""
        if previous is not None:
            await previous
        if write.acks:
            await asyncio.gather(*write.acks)
        await self._write(write)
        self._durable.update(offsets)
        self.batch_written(batch)
        self._commit_soon()

    def _commit_soon(self, *, force: bool = False) -> None:
        """Commit the offsets of every batch written so far, beside the writes: one commit at
        a time, each taking all that became durable meanwhile (a crash replays what was not
        committed; the watermarks skip it). A failed commit raises at the next call."""
        running = self._committing
        if running is not None:
            if not running.done():
                return  # it goes round again for what landed meanwhile
            self._committing = None
            running.result()
        if not force and time.monotonic() - self._last_commit < COMMIT_EVERY_S:
            return  # the next write, or the idle loop's settle, commits it
        if any(self._committed.get(tp) != offset for tp, offset in self._durable.items()):
            self._committing = asyncio.create_task(self._commit_durable())

    async def _commit_durable(self) -> None:
        assert self._consumer is not None
        while True:
            offsets = {tp: offset for tp, offset in self._durable.items()
                       if self._committed.get(tp) != offset}
            if not offsets:
                return
            self._last_commit = time.monotonic()
            await self._consumer.commit(offsets)
            self._committed.update(offsets)

    async def _landed(self) -> None:
        """Wait until every batch applied so far is written (not necessarily committed)."""
        started = time.perf_counter()
        while self._in_flight:
            await asyncio.wait([self._in_flight[0].task])
            self._reap()
        self.seconds["persist"] += time.perf_counter() - started

    async def settle(self) -> None:
        """Wait until every batch applied so far is written and its offsets committed."""
        async with self._settling:
            await self._landed()
            self._commit_soon(force=True)
            while self._committing is not None:
                running = self._committing
                await asyncio.wait([running])
                if self._committing is running:
                    self._committing = None
                running.result()
                self._commit_soon(force=True)  # what landed during that commit, if anything

    def _reap(self) -> None:
        """Forget the finished writes at the head; a failed one raises here (the worker stops,
        nothing after it was written or committed)."""
        flights = self._in_flight
        while flights and flights[0].task.done():
            flights.popleft().task.result()

    def batch_written(self, batch: dict[TopicPartition, list[Record]]) -> None:
        """Called once a batch's state is in Redis (visible to readers). The benchmark times
        records with it."""

    async def _route(self, records: list[Record], result: BatchResult) -> list[WorkItem]:
        decoded = []
        now = self.clock()
        for n, record in enumerate(records):
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            try:
                event = self._decode(record, now)
            except EventDecodeError as exc:
                result.dead.append(DeadLetter(record, exc.reason))
                continue
            decoded.append((record, event))
        await self._lookup_links(e for r, e in decoded if r.topic != self.settings.keyed_topic)
        items = []
        for record, event in decoded:
            item = (self._keyed_item(record, event, result)
                    if record.topic == self.settings.keyed_topic
                    else self._source_item(record, event, result))
            if item is not None:
                items.append(item)
        return items

    def _decode(self, record: Record, now: int) -> Event:
        """Decode as the ``stream`` header says (``domain.records``); a generic event without a
        time of its own is stamped with the record's produce time, so a replay gets the same."""
        raw = RawRecord(record.value or b"", record.timestamp or 0, *decoding_headers(record))
        return decode_record(raw, now_ms=now, max_bytes=self.settings.max_event_bytes)

    def _keyed_item(self, record: Record, event: Event, result: BatchResult) -> WorkItem | None:
        """A forwarded event: apply it to the one entity its key names."""
        ref, src = parse_ref(record.key), header(record, SOURCE_HEADER)
        if ref is None or src is None:
            result.dead.append(DeadLetter(record, "forwarded record without key or source"))
            return None
        return WorkItem(record, event, [ref], Source.parse(src), src)

    def _source_item(self, record: Record, event: Event, result: BatchResult) -> WorkItem | None:
        """An event from ``events``: apply it to the entities owned here, forward the rest."""
        event_refs = engine.entities_of(event, self.topology)
        refs = event_refs + self._stitch(event, result)
        if not refs:
            if self.topology.keys:
                wanted = ", ".join(k.name for k in self.topology.keys)
                result.dead.append(DeadLetter(record, f"event carries no attribute key in use ({wanted})"))
            else:
                self.stats["ignored"] += 1  # nothing published yet: computation starts at publish
            return None
        source = Source(record.topic, record.partition, record.offset)
        local = []
        for ref in refs if len(refs) == 1 else dict.fromkeys(refs):  # each entity once
            owner = self.ownership.owner(ref)
            if owner == record.partition:
                local.append(ref)
            else:
                result.forwards.append(Forward(record, ref, owner, source))
        return WorkItem(record, event, local, source, str(source), event_refs) if local else None

    def _stitch(self, event: Event, result: BatchResult) -> list[EntityRef]:
        """Identity stitching: link the event's other identifiers to its profile, or find the
        profile of an event that carries only those (see ``domain.identity``)."""
        profile_key = self.identities[0]
        if not self.topology.segments_for(profile_key):
            return []
        values = identity_values(event, self.identities)
        if values and values[0][0] == profile_key:
            profile = EntityRef(profile_key, values[0][1])
            for pair in links_of(profile, values):
                if pair not in self.links:
                    self.links[pair] = profile
                    result.links.append((pair, profile))
            return []
        for pair in values:
            if pair in self.links:
                return [self.links[pair]]
        return []

    async def _lookup_links(self, events: Iterable[Event]) -> None:
        profile_key = self.identities[0]
        if not self.topology.segments_for(profile_key):
            return
        wanted = {pair for e in events for pair in identity_values(e, self.identities)
                  if pair[0] != profile_key and pair not in self.links}
        if wanted:
            if len(self.links) > CACHE_MAX_ENTITIES:
                self.links.clear()
            found = await _retry_redis(lambda: identity.lookup(self.redis, sorted(wanted)))
            self.links.update(found)

    async def _load_missing(self, refs: Iterable[EntityRef]) -> None:
        missing = list(dict.fromkeys(r for r in refs if r not in self.cache))
        if not missing:
            return
        if len(self.cache) + len(missing) > CACHE_MAX_ENTITIES:
            await self._landed()
            self.cache.clear()  # simple bound: all cached state is also in Redis
        elif any(not flight.refs.isdisjoint(missing) for flight in self._in_flight):
            await self._landed()  # dropped while being written: reload what that write leaves
        self.cache.update(await _retry_redis(lambda: self.store.load(missing)))

    async def _apply_all(self, items: list[WorkItem], result: BatchResult, now: int) -> None:
        """Step 3 for every item, in order (one loop for the batch: what it looks up per event
        is looked up once here)."""
        cache, topology, touched = self.cache, self.topology, result.touched
        apply_event = engine.apply_event
        oldest = now - self.settings.allowed_lateness_ms
        for n, item in enumerate(items):
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # let the previous batch's write move (see YIELD_EVERY)
            topic, partition, offset = src = item.source
            event = item.event
            late = event.timestamp_ms < oldest
            for ref in item.refs:
                state = cache[ref]
                if state.already_applied(topic, partition, offset):
                    result.skipped += 1
                    continue
                try:
                    if late:
                        result.late += 1  # beyond the allowed lateness: counted, not applied
                    else:
                        found = apply_event(state, event, topology, cause=item.cause, now_ms=now,
                                            event_refs=item.event_refs)
                        if found:
                            result.transitions += found
                except Exception as exc:  # a bug on one event must not stop the stream
                    log.exception("event %s failed on %s", src, ref)
                    result.dead.append(DeadLetter(item.record, f"internal error: {exc!r}"))
                state.advance(topic, partition, offset)
                touched[ref] = state
        result.events += len(items)

    async def _produce(self, result: BatchResult) -> list[asyncio.Future[object]]:
        """Queue the batch's dead letters, forwards and transitions; returns their acks (the
        caller awaits them before the batch's write)."""
        assert self._producer is not None
        send = self._producer.send
        futures = []
        for dead in result.dead:
            record = dead.record
            headers = [("reason", dead.reason.encode()),
                       ("source", f"{record.topic}/{record.partition}/{record.offset}".encode())]
            futures.append(await send(self.settings.events_dlq_topic, record.value,
                                      key=record.key, headers=headers))
        if result.forwards:
            futures += await kafka.send_batched(self._producer, self.settings.keyed_topic, (
                (fwd.partition, str(fwd.ref).encode(), fwd.record.value or b"",
                 [(SOURCE_HEADER, str(fwd.source).encode())] + [
                     (name, value) for name, value in fwd.record.headers or ()
                     if name in (STREAM_HEADER, TIMESTAMP_FIELD_HEADER)])
                for fwd in result.forwards))  # fmt: skip
        owner = self._transition_owner.owner
        futures += await kafka.send_batched(self._producer, self.settings.transitions_topic, (
            (owner(t.entity), str(t.entity).encode(), t.to_json(), []) for t in result.transitions))
        return futures

    def _encode(self, states: list[EntityState], transitions: list[Transition], now: int,
                links: list[tuple[tuple[str, str], EntityRef]] | None = None) -> PendingWrite:
        """Everything the batch writes, computed now, before the next batch changes the
        entities: links, index and schedule (idempotent, recomputed on replay), then entities."""
        write = PendingWrite(EntityWrite(), links=list(links or ()))
        write.members = [(t.segment_id, t.entity, t.event == "enter") for t in transitions]
        for state in states:
            owner = self.ownership.owner(state.ref)
            if not state.stored:
                write.new.append((owner, state.ref))
            if self.topology.segments_for(state.ref.key):
                write.due.append((owner, state.ref, engine.next_due(state, self.topology, now)))
        write.entities = self.store.encode(states)
        return write

    async def _write(self, write: PendingWrite) -> None:
        """One round trip; refused entities leave the cache (they are reloaded from Redis)."""
        refused = await _retry_redis(lambda: self.store.send(write.entities, write.stage))
        for ref in refused:
            self.cache.pop(ref, None)

    async def run_due(self) -> None:
        """Re-evaluate the owned entities whose due time has come; emit real changes only."""
        tick = time.monotonic()
        if tick < self._next_due_check or self._consumer is None or not self.topology.segments:
            return
        self._next_due_check = tick + self.settings.scheduler_tick_ms / 1000
        owned = self._owned()
        if not await _retry_redis(lambda: self._due_work(owned, self.clock())):
            return  # the usual tick: no wait for the writes in flight
        await self._landed()  # the due entities' state must be the written one
        now = self.clock()
        for partition in owned:
            rows = await _retry_redis(lambda p=partition: schedule.due(self.redis, p, now, DUE_BATCH))
            if rows:
                await self._reevaluate([(ref, f"due/{due}", due) for ref, due in rows], now)
                self.stats["due"] += len(rows)
            await self._reevaluation_page(partition, now)

    async def _due_work(self, partitions: list[int], now: int) -> bool:
        """Whether any of ``partitions`` has an entity due or a re-evaluation job, asked in
        one round trip: writes in flight may still move a due time, so a yes is checked again
        once they landed, and a due time they add is seen at the next tick."""
        if not partitions:
            return False
        commands = Commands()
        for partition in partitions:
            schedule.stage_probe(commands, partition, now)
            reevaluation.stage_probe(commands, partition)
        return any(await round_trip(self.redis, commands.packed(), commands.count))

    def _owned(self) -> list[int]:
        if self._consumer is None:
            return []
        return sorted(tp.partition for tp in self._consumer.assignment()
                      if tp.topic == self.settings.keyed_topic)

    async def _reevaluation_page(self, partition: int, now: int) -> None:
        """One bounded page of evaluating existing entities against changed segments."""
        job = await _retry_redis(lambda: reevaluation.job(self.redis, partition))
        if job is None or job.version > self.topology.version:
            return  # nothing to do, or a definition this worker has not loaded yet
        cursor, refs = await _retry_redis(lambda: reevaluation.page(self.redis, job, REEVAL_PAGE))
        if refs:
            cause = f"segments/{job.version}"
            await self._reevaluate([(ref, cause, now) for ref in refs], now)
        await _retry_redis(lambda: reevaluation.advance(self.redis, job, cursor, len(refs)))
        if cursor == 0:
            log.info("partition %d evaluated against registry version %d", partition, job.version)

    async def _reevaluate(self, rows: list[tuple[EntityRef, str, int]], now: int) -> None:
        """Evaluate entities' segments with no event (time came, or segments changed)."""
        await self._load_missing(ref for ref, _, _ in rows)
        transitions: list[Transition] = []
        states = []
        for ref, cause, at_ms in rows:
            state = self.cache[ref]
            transitions += engine.evaluate_segments(
                state, self.topology, cause=cause, now_ms=now, at_ms=at_ms
            )
            states.append(state)
        acks = await self._produce(BatchResult(transitions=transitions))
        if acks:
            await asyncio.gather(*acks)
        await self._write(self._encode(states, transitions, now))
        self.stats["transitions"] += len(transitions)

    def _count(self, result: BatchResult) -> None:
        self.stats["batches"] += 1
        self.stats["events"] += result.events
        self.stats["dead"] += len(result.dead)
        self.stats["forwarded"] += len(result.forwards)
        self.stats["transitions"] += len(result.transitions)
        self.stats["skipped"] += result.skipped
        self.stats["late"] += result.late
        if result.dead:
            log.warning("batch sent %d records to the dead-letter topic; first: %s",
                        len(result.dead), result.dead[0].reason)


def _segments_changed(before: Topology, after: Topology) -> bool:
    """A segment was added or its definition changed (removals need no evaluation)."""
    old = {s.id: s.statement for s in before.segments}
    return any(old.get(s.id) != s.statement for s in after.segments)


async def _retry_redis(call: Callable[[], Awaitable[T]]) -> T:
    """Retry a Redis call through an outage (e.g. a restart); offsets stay uncommitted meanwhile."""
    delay = 0.05
    while True:
        try:
            return await call()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            log.warning("redis unavailable (%s); retrying in %.2fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
