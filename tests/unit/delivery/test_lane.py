"""The subscription lane and the offset tracker, on scripted sinks and an in-memory park store:
parking keeps per-entity order, background retries drain it, the budget dead-letters, deleting
drops everything, and offsets commit only past settled records."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable

from aiokafka import TopicPartition

from processor.domain.payloads import Delivery
from processor.domain.subscriptions import Subscription
from processor.domain.transitions import EntityRef, Transition
from processor.metrics import DeliveryMetrics
from processor.sinks.base import DeliveryResult, Outcome, Sink
from processor.sinks.lane import LaneItem, LanePolicy, SubscriptionLane
from processor.state.deliveries import ParkedRecord, ParkStore
from processor.streams.delivery import OffsetTracker

SUB = Subscription(id="s1", channel="webhook", segment_ids=("seg",),
                   webhook_url="https://example.com/hook")
POLICY = LanePolicy(in_place_attempts=1, in_place_budget_s=0.0, max_attempts=4,
                    backoff_base_s=0.001, backoff_cap_s=0.002, tick_s=0.005, spill_at=1000)


class ScriptedSink(Sink):
    """Answers each record with ``answer(delivery)``; after a ``retry`` the rest of that
    entity's records in the flush come back ``retry`` unsent, as park-mode sinks do."""

    def __init__(self, answer: Callable[[Delivery], Outcome], sent: list[Delivery]) -> None:
        self._answer = answer
        self.sent = sent
        self._pending: list[Delivery] = []

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def add(self, record: Delivery) -> None:
        self._pending.append(record)

    async def flush(self) -> list[DeliveryResult]:
        pending, self._pending = self._pending, []
        blocked: set[tuple[str, str]] = set()
        results = []
        for record in pending:
            if record.ordering_key in blocked:
                results.append(DeliveryResult(record, "retry", 0, "behind"))
                continue
            self.sent.append(record)
            outcome = self._answer(record)
            if outcome == "retry":
                blocked.add(record.ordering_key)
            results.append(DeliveryResult(record, outcome, 1, None if outcome == "delivered"
                                          else f"scripted {outcome}"))
        return results


class MemoryParkStore(ParkStore):
    def __init__(self) -> None:
        self.data: dict[tuple[str, int], dict[str, bytes]] = {}

    async def save(self, subscription_id: str, records: Iterable[ParkedRecord]) -> None:
        for r in records:
            self.data.setdefault((subscription_id, r.partition), {})[r.transition.transition_id] = r.to_json()
            r.stored = True

    async def remove(self, subscription_id: str, records: Iterable[ParkedRecord]) -> None:
        for r in records:
            self.data.get((subscription_id, r.partition), {}).pop(r.transition.transition_id, None)

    async def load(self, subscription_id: str, partition: int) -> list[ParkedRecord]:
        raw = self.data.get((subscription_id, partition), {}).values()
        return sorted((ParkedRecord.from_json(v) for v in raw), key=lambda r: r.offset)

    async def drop(self, subscription_id: str, partitions: Iterable[int]) -> None:
        for p in partitions:
            self.data.pop((subscription_id, p), None)

    def count_all(self) -> int:
        return sum(len(v) for v in self.data.values())


def transition(entity: str, n: int) -> Transition:
    return Transition(f"t-{entity}-{n}", EntityRef("user_id", entity), "seg", "seg",
                      "enter" if n % 2 == 0 else "exit", 1_000 + n)


class Harness:
    def __init__(self, answer: Callable[[Delivery], Outcome]) -> None:
        self.sent: list[Delivery] = []
        self.dead: list[DeliveryResult] = []
        self.acks: list[int] = []
        self.parks = MemoryParkStore()
        self.metrics = DeliveryMetrics()

        async def dead_letter(results: list[DeliveryResult]) -> None:
            self.dead.extend(results)

        self.lane = SubscriptionLane(SUB, live=ScriptedSink(answer, self.sent),
                                     retry=[ScriptedSink(answer, self.sent)], parks=self.parks,
                                     dead_letter=dead_letter, metrics=self.metrics,
                                     policy=POLICY, rng=random.Random(1))

    def submit(self, offset: int, t: Transition) -> None:
        self.lane.submit(LaneItem(0, offset, 0, t, lambda: self.acks.append(offset)))

    async def until(self, done: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                await asyncio.sleep(0.005)

    def delivered_ids(self) -> list[str]:
        return [d.transition.transition_id for d in self.sent]


def test_a_parked_record_holds_its_entity_and_the_retry_loop_keeps_order() -> None:
    failures = {"t-a-0": 2}  # a's first record fails twice, then goes through

    def answer(d: Delivery) -> Outcome:
        left = failures.get(d.transition.transition_id, 0)
        if left:
            failures[d.transition.transition_id] = left - 1
            return "retry"
        return "delivered"

    async def scenario() -> Harness:
        h = Harness(answer)
        await h.lane.start([0])
        for offset, t in enumerate([transition("a", 0), transition("b", 0), transition("a", 1),
                                    transition("a", 2), transition("b", 1)]):
            h.submit(offset, t)
        await h.until(lambda: h.parks.count_all() == 0 and len(h.acks) == 5
                      and h.metrics.value("signalbox_delivery_delivered_total", "s1") == 5)
        await h.lane.close()
        return h

    h = asyncio.run(scenario())
    firsts: dict[str, list[str]] = {}
    for tid in dict.fromkeys(h.delivered_ids()):
        firsts.setdefault(tid.split("-")[1], []).append(tid)
    assert firsts == {"a": ["t-a-0", "t-a-1", "t-a-2"], "b": ["t-b-0", "t-b-1"]}
    assert sorted(h.acks) == [0, 1, 2, 3, 4] and not h.dead
    assert h.metrics.value("signalbox_delivery_parked_total", "s1") == 3  # a-0, then a-1, a-2


def test_after_the_retry_budget_the_record_is_dead_lettered_and_the_entity_moves_on() -> None:
    def answer(d: Delivery) -> Outcome:
        return "retry" if d.transition.transition_id == "t-a-0" else "delivered"

    async def scenario() -> Harness:
        h = Harness(answer)
        await h.lane.start([0])
        h.submit(0, transition("a", 0))
        h.submit(1, transition("a", 1))
        await h.until(lambda: len(h.dead) == 1 and h.parks.count_all() == 0)
        await h.lane.close()
        return h

    h = asyncio.run(scenario())
    assert [r.delivery.transition.transition_id for r in h.dead] == ["t-a-0"]
    assert h.dead[0].attempts == POLICY.max_attempts
    assert (h.dead[0].reason or "").startswith("gave up after 4 attempts")
    assert h.delivered_ids().count("t-a-0") == POLICY.max_attempts
    assert h.delivered_ids()[-1] == "t-a-1"  # only after a-0 was given up
    assert h.metrics.value("signalbox_delivery_dead_lettered_total", "s1") == 1


def test_a_dead_answer_is_dead_lettered_at_once_without_holding_the_entity() -> None:
    def answer(d: Delivery) -> Outcome:
        return "dead" if d.transition.transition_id == "t-a-0" else "delivered"

    async def scenario() -> Harness:
        h = Harness(answer)
        await h.lane.start([0])
        h.submit(0, transition("a", 0))
        h.submit(1, transition("a", 1))
        await h.until(lambda: len(h.acks) == 2)
        await h.lane.close()
        return h

    h = asyncio.run(scenario())
    assert h.delivered_ids() == ["t-a-0", "t-a-1"] and len(h.dead) == 1
    assert h.parks.count_all() == 0


def test_closing_a_deleted_subscription_settles_everything_and_drops_parked_records() -> None:
    async def scenario() -> Harness:
        h = Harness(lambda d: "retry")
        await h.lane.start([0])
        h.submit(0, transition("a", 0))
        h.submit(1, transition("a", 1))
        await h.until(lambda: h.parks.count_all() == 2)
        sent_before = len(h.sent)
        await h.lane.close(drop_parked=True, partitions=[0, 1])
        await asyncio.sleep(0.05)
        assert len(h.sent) == sent_before  # nothing more goes out once closed
        return h

    h = asyncio.run(scenario())
    assert sorted(h.acks) == [0, 1] and h.parks.count_all() == 0 and not h.dead


def test_parked_records_survive_a_restart_of_the_lane() -> None:
    state = {"up": False}

    def answer(d: Delivery) -> Outcome:
        return "delivered" if state["up"] else "retry"

    async def scenario() -> tuple[Harness, list[str]]:
        h = Harness(answer)
        await h.lane.start([0])
        h.submit(0, transition("a", 0))
        await h.until(lambda: h.parks.count_all() == 1)
        await h.lane.close()
        state["up"] = True
        again = Harness(answer)
        again.parks = h.parks
        again.lane._parks = h.parks
        await again.lane.start([0])
        await again.until(lambda: h.parks.count_all() == 0)
        await again.lane.close()
        return h, again.delivered_ids()

    _, delivered = asyncio.run(scenario())
    assert delivered == ["t-a-0"]


def test_the_tracker_commits_only_up_to_the_lowest_unsettled_offset() -> None:
    tracker = OffsetTracker()
    tp = TopicPartition("t", 0)
    acks = [tracker.track(tp, offset, lanes) for offset, lanes in [(10, 2), (11, 0), (12, 1)]]
    assert tracker.committable() == {tp: 10}
    acks[2]()
    acks[0]()
    assert tracker.committable() == {tp: 10}  # offset 10 still waits for its second lane
    acks[0]()
    assert tracker.committable() == {tp: 13}
    tracker.committed({tp: 13})
    assert tracker.committable() == {} and tracker.outstanding == 0
    late = tracker.track(tp, 13, 1)
    tracker.drop([tp])
    late()  # an ack after a revoke touches nothing
    assert tracker.committable() == {}


class SlowSink(ScriptedSink):
    """Delivers after ``delay`` s, noting how many flushes are in flight at once."""

    def __init__(self, sent: list[Delivery], stats: dict[str, int], delay: float = 0.01) -> None:
        super().__init__(lambda d: "delivered", sent)
        self._stats, self._delay = stats, delay

    async def flush(self) -> list[DeliveryResult]:
        self._stats["now"] += 1
        self._stats["max"] = max(self._stats["max"], self._stats["now"])
        await asyncio.sleep(self._delay)
        self._stats["now"] -= 1
        return await super().flush()


def test_live_slots_send_entities_concurrently_and_each_entity_in_order() -> None:
    stats = {"now": 0, "max": 0}

    async def scenario() -> Harness:
        h = Harness(lambda d: "delivered")
        h.lane = SubscriptionLane(SUB, live=[SlowSink(h.sent, stats) for _ in range(8)],
                                  retry=[ScriptedSink(lambda d: "delivered", h.sent)],
                                  parks=h.parks, dead_letter=h.lane._dead_letter,
                                  metrics=h.metrics, policy=POLICY, chunk=1)
        await h.lane.start([0])
        offset = 0
        for n in range(5):
            for entity in "abcd":
                h.submit(offset, transition(entity, n))
                offset += 1
        await h.until(lambda: len(h.acks) == 20)
        await h.lane.close()
        return h

    h = asyncio.run(scenario())
    assert 1 < stats["max"] <= 4  # concurrent, but never one entity in two slots
    for entity in "abcd":
        mine = [t for t in h.delivered_ids() if t.split("-")[1] == entity]
        assert mine == [f"t-{entity}-{n}" for n in range(5)]
    assert sorted(h.acks) == list(range(20))


def test_a_stalled_target_spills_its_queue_but_a_draining_one_does_not() -> None:
    policy = LanePolicy(in_place_attempts=1, in_place_budget_s=0.0, tick_s=0.005, spill_at=5,
                        spill_after_s=0.2)

    async def scenario(delay: float, count: int) -> Harness:
        h = Harness(lambda d: "delivered")
        stats = {"now": 0, "max": 0}
        h.lane = SubscriptionLane(SUB, live=[SlowSink(h.sent, stats, delay)],
                                  retry=[ScriptedSink(lambda d: "delivered", h.sent)],
                                  parks=h.parks, dead_letter=h.lane._dead_letter,
                                  metrics=h.metrics, policy=policy, chunk=1)
        await h.lane.start([0])
        for offset in range(count):
            h.submit(offset, transition(f"e{offset}", 0))
        await h.until(lambda: len(h.acks) == count, timeout=20)
        await h.lane.close()
        return h

    stalled = asyncio.run(scenario(delay=1.0, count=10))  # nothing settles for 1 s
    assert stalled.metrics.value("signalbox_delivery_parked_total", "s1") >= 5
    draining = asyncio.run(scenario(delay=0.001, count=200))  # a backlog going out steadily
    assert draining.metrics.value("signalbox_delivery_parked_total", "s1") == 0
