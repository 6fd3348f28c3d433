"""The ten conformance scenarios of the Lytics spec (``specs/lytics-api.md`` §6), end to end
through real Kafka and Redis.

Each test runs one ``EventWorker`` in-process on a ``ManualClock`` starting at
T0 = 2026-01-02T00:00:00Z, sends the scenario's events (their ``ts`` is the clock), and after
every step asserts the *exact multiset* of new records on the transitions topic, read with a
settle period so that an extra or duplicated transition would be seen. A step is asserted only
once the worker has consumed its events (or, after the clock moved, has run its scheduler
twice), so "nothing" means nothing, not "not yet". Deliveries are tested elsewhere, except for
S9: backfill is a property of a subscription, so S9 also runs the delivery worker against a
real webhook receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis

from processor.clock import wall_ms
from processor.delivery_admin import TARGET_HEADER
from processor.domain.transitions import EntityRef, Transition
from processor.errors import DefinitionError
from processor.publishing import publish_segment, publish_subscription
from processor.settings import Settings
from processor.state.entities import EntityStore
from processor.state.members import MemberIndex
from processor.state.registry import Registry
from processor.streams import kafka
from processor.streams.delivery import DeliveryWorker
from processor.streams.worker import EventWorker
from tests.support.clock import ManualClock, at
from tests.support.kafka_io import read_topic
from tests.support.receiver import ReceivedRequest, WebhookReceiver
from tests.support.running import running

pytestmark = pytest.mark.integration

T0 = at("2026-01-02T00:00:00Z")
SETTLE = 0.4  # seconds to keep reading after the expected records arrived
TOLERANCE_MS = 30 * 60_000  # spec §5.2: time-based triggers may lag by up to 30 minutes
MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000

Seen = tuple[str, str, str]  # (entity id, segment slug, "enter" | "exit")


class ObservedWorker(EventWorker):
    """The event worker, counting finished scheduler passes so that a test knows one ran
    entirely after it moved the clock."""

    def __init__(self, settings: Settings, redis: Redis, clock: ManualClock) -> None:
        super().__init__(settings, redis, clock)
        self.due_passes = 0

    async def run_due(self) -> None:
        await super().run_due()
        self.due_passes += 1


async def until(check: Callable[[], Any], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Scenario:
    """One running worker plus the bookkeeping to assert step by step."""

    def __init__(self, settings: Settings, redis: Redis, clock: ManualClock,
                 worker: ObservedWorker, segment_ids: dict[str, str]) -> None:
        self.settings = settings
        self.redis = redis
        self.registry = Registry(redis)
        self.clock = clock
        self.worker = worker
        self.ids = segment_ids  # slug -> id
        self.seen: Counter[bytes] = Counter()  # every transition record read so far
        self.sent = 0
        self.transitions_read = 0  # records of the topic read so far, targeted ones included

    # -- driving ---------------------------------------------------------------------------

    async def send(self, *events: dict[str, Any], stream: str = "default") -> None:
        """Produce events one second after the previous step, stamped with the clock, keyed by
        ``user_id`` (else ``email``), and wait until the worker has consumed every one."""
        self.clock.advance(1000)
        producer = kafka.producer(self.settings)
        await producer.start()
        try:
            futures = []
            for fields in events:
                doc = {"ts": self.clock(), **fields}
                key = f"user_id:{doc['user_id']}" if "user_id" in doc else f"email:{doc['email']}"
                futures.append(await producer.send(self.settings.events_topic, orjson.dumps(doc),
                                                   key=key.encode(),
                                                   headers=[("stream", stream.encode())]))
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        self.sent += len(events)
        stats = self.worker.stats
        await until(lambda: stats["events"] + stats["dead"] + stats["ignored"] >= self.sent,
                    f"the worker to consume {self.sent} events (stats {stats})")
        await self.assert_no_dead_letters()

    async def advance_to(self, when_ms: int) -> None:
        """Move the clock, then wait for two scheduler passes (the first may have begun
        before the move)."""
        self.clock.set(when_ms)
        passes = self.worker.due_passes
        await until(lambda: self.worker.due_passes >= passes + 2, "two scheduler passes")

    # -- asserting -------------------------------------------------------------------------

    async def expect(self, *expected: Seen) -> list[Transition]:
        """The transitions produced since the last call are exactly ``expected`` (a multiset)."""
        records = await read_topic(self.settings, self.settings.transitions_topic,
                                   at_least=self.transitions_read + len(expected),
                                   timeout=15, settle=SETTLE)
        # Records addressed to one subscription (backfill, redelivery) are not membership
        # changes; S9 asserts them through the deliveries they cause.
        everything = Counter(r.value for r in records
                             if TARGET_HEADER not in {k for k, _ in r.headers or ()})
        new = [Transition.from_json(v) for v in (everything - self.seen).elements()]
        self.seen = everything
        self.transitions_read = len(records)
        got = Counter((t.entity.id, t.segment_slug, t.event) for t in new)
        assert got == Counter(expected), f"transitions {dict(got)} != expected {dict(Counter(expected))}"
        return new

    async def assert_no_dead_letters(self) -> None:
        if not self.worker.stats["dead"]:
            return
        dead = await read_topic(self.settings, self.settings.events_dlq_topic,
                                at_least=self.worker.stats["dead"], timeout=5)
        reasons = [(r.value, dict(r.headers).get("reason", b"").decode()) for r in dead]
        raise AssertionError(f"events were dead-lettered: {reasons}")

    async def assert_index(self, slug: str, users: list[str], members: set[str]) -> None:
        """The member index lists exactly ``members``, and so do the stored entities."""
        segment_id = self.ids[slug]
        index = {ref async for ref in MemberIndex(self.redis).members(segment_id)}
        refs = [EntityRef("user_id", u) for u in users]
        states = await EntityStore(self.redis).read(refs)
        stored = {ref for ref, state in states.items() if state.members.get(segment_id)}
        assert index == stored, f"{slug}: member index {index} != entity state {stored}"
        assert {ref.id for ref in index} == members, f"{slug}: members {index}"
        assert await MemberIndex(self.redis).count(segment_id) == len(members)

    async def profile(self, user: str) -> dict[str, Any]:
        ref = EntityRef("user_id", user)
        return (await EntityStore(self.redis).read([ref]))[ref].profile_values()


@contextlib.asynccontextmanager
async def scenario(settings: Settings, segments: list[str]) -> AsyncIterator[Scenario]:
    """Publish ``segments``, run a worker on a clock at T0 until it runs that registry version."""
    await kafka.ensure_topics(settings)
    redis = Redis.from_url(settings.redis_url)
    worker_redis = Redis.from_url(settings.redis_url)
    try:
        registry = Registry(redis)
        ids = {}
        for ql in segments:
            segment = await publish_segment(registry, {"segment_ql": ql})
            ids[segment.slug_name] = segment.id
        clock = ManualClock(T0)
        worker = ObservedWorker(settings, worker_redis, clock)
        async with running(worker.run):
            version = await registry.version()
            await until(lambda: worker.topology.version >= version, "the worker to load the segments")
            yield Scenario(settings, redis, clock, worker, ids)
    finally:
        await worker_redis.aclose()
        await redis.aclose()


def run(coro: Any) -> None:
    asyncio.run(coro)


# -- S1, S2 -----------------------------------------------------------------------------------

DEMO = 'FILTER AND ( paying_user = "t" ) FROM user ALIAS demo_segment'


def test_s1_seed_happy_path_has_no_duplicates(settings: Settings) -> None:
    async def steps() -> None:
        async with scenario(settings, [DEMO]) as s:
            await s.send({"user_id": "u1", "paying_user": "t"})
            (enter,) = await s.expect(("u1", "demo_segment", "enter"))
            assert enter.segment_id == s.ids["demo_segment"]
            assert enter.entity == EntityRef("user_id", "u1")
            assert enter.profile["user_id"] == "u1"
            assert enter.profile["paying_user"] == "t"
            assert enter.at_ms == s.clock()

            await s.send({"user_id": "u1", "page": "/x"})
            await s.expect()
            await s.assert_index("demo_segment", ["u1"], {"u1"})

    run(steps())


def test_s2_exit_and_reentry(settings: Settings) -> None:
    async def steps() -> None:
        async with scenario(settings, [DEMO]) as s:
            await s.send({"user_id": "u1", "paying_user": "t"})
            await s.expect(("u1", "demo_segment", "enter"))
            await s.send({"user_id": "u1", "page": "/x"})
            await s.expect()

            await s.send({"user_id": "u1", "paying_user": "f"})
            (exit_,) = await s.expect(("u1", "demo_segment", "exit"))
            assert exit_.at_ms == s.clock()  # the exit timestamp is the event's time
            await s.assert_index("demo_segment", ["u1"], set())

            await s.send({"user_id": "u1", "paying_user": "t"})
            await s.expect(("u1", "demo_segment", "enter"))
            await s.assert_index("demo_segment", ["u1"], {"u1"})

    run(steps())


# -- S3 ---------------------------------------------------------------------------------------

def test_s3_missing_field_semantics(settings: Settings) -> None:
    async def steps() -> None:
        async with scenario(settings, ['FILTER country != "US" ALIAS non_us',
                                       'FILTER country = "US" ALIAS us_only']) as s:
            await s.send({"user_id": "u2", "email": "a@b.c"})
            await s.expect(("u2", "non_us", "enter"))  # missing != is true, missing = is false

            await s.send({"user_id": "u2", "country": "US"})
            await s.expect(("u2", "non_us", "exit"), ("u2", "us_only", "enter"))

            await s.send({"user_id": "u2", "country": "us"})  # equality is case-sensitive
            await s.expect(("u2", "us_only", "exit"), ("u2", "non_us", "enter"))
            await s.assert_index("non_us", ["u2"], {"u2"})
            await s.assert_index("us_only", ["u2"], set())

    run(steps())


# -- S4 ---------------------------------------------------------------------------------------

def test_s4_identity_stitching_across_streams(settings: Settings) -> None:
    async def steps() -> None:
        async with scenario(settings, ['FILTER AND ( EXISTS email, plan = "pro" ) ALIAS pro_email']) as s:
            await s.send({"user_id": "u3", "plan": "pro"}, stream="app")
            await s.expect()  # no email yet

            await s.send({"user_id": "u3", "email": "u3@x.io"}, stream="app")
            await s.expect(("u3", "pro_email", "enter"))

            # No user_id: merged into u3 by its email.
            await s.send({"email": "u3@x.io", "plan": "free"}, stream="crm")
            (exit_,) = await s.expect(("u3", "pro_email", "exit"))
            assert exit_.entity == EntityRef("user_id", "u3")
            data = {**exit_.identifiers, **exit_.profile}  # what a delivery's ``data`` holds
            assert data["user_id"] == "u3"
            assert data["email"] == "u3@x.io"
            assert (await s.profile("u3"))["plan"] == "free"
            await s.assert_index("pro_email", ["u3"], set())

    run(steps())


# -- S5, S6: time ----------------------------------------------------------------------------

def assert_due(transition: Transition, boundary_ms: int) -> None:
    assert boundary_ms <= transition.at_ms <= boundary_ms + TOLERANCE_MS, (
        f"{transition.event} at {transition.at_ms}, boundary {boundary_ms}")


def test_s5_time_based_exit_without_new_events(settings: Settings) -> None:
    async def steps() -> None:
        async with scenario(settings, ['FILTER last_active_ts > "now-30d" ALIAS active_30d']) as s:
            # u4: the spec's main line. u4b: the variant, whose later activity moves its exit.
            await s.send({"user_id": "u4", "last_active_ts": "2026-01-01T00:00:00Z"},
                         {"user_id": "u4b", "last_active_ts": "2026-01-01T00:00:00Z"})
            await s.expect(("u4", "active_30d", "enter"), ("u4b", "active_30d", "enter"))

            await s.advance_to(T0 + 10 * DAY)
            await s.send({"user_id": "u4b", "last_active_ts": "2026-01-12T00:00:00Z"})
            await s.expect()  # still a member

            await s.advance_to(at("2026-01-30T23:00:00Z"))
            await s.expect()
            await s.advance_to(at("2026-01-31T00:00:00Z"))  # Bt = T0 + (Ct - Rt) = T0 + 29d
            (exit_,) = await s.expect(("u4", "active_30d", "exit"))
            assert_due(exit_, at("2026-01-31T00:00:00Z"))
            await s.assert_index("active_30d", ["u4", "u4b"], {"u4b"})

            await s.advance_to(at("2026-02-10T23:00:00Z"))
            await s.expect()
            await s.advance_to(at("2026-02-11T00:00:00Z"))  # T0 + 40d
            (exit_,) = await s.expect(("u4b", "active_30d", "exit"))
            assert_due(exit_, at("2026-02-11T00:00:00Z"))
            await s.assert_index("active_30d", ["u4", "u4b"], set())

    run(steps())


def test_s6_time_based_enter_as_a_future_date_approaches(settings: Settings) -> None:
    async def steps() -> None:
        async with scenario(settings, [
            'FILTER renewal_date < "now+7d" ALIAS renewal_due',
            'FILTER renewal_date BETWEEN "now-1d" AND "now+7d" ALIAS renewal_window',
        ]) as s:
            await s.send({"user_id": "u5", "renewal_date": "2026-01-20T00:00:00Z"})
            await s.expect()  # Jan 20 is not before Jan 9

            enter_at = at("2026-01-13T00:00:00Z")  # T0 + (Jan 20 - Jan 9)
            await s.advance_to(enter_at - 1000)
            await s.expect()
            await s.advance_to(enter_at + MINUTE)
            entered = await s.expect(("u5", "renewal_due", "enter"), ("u5", "renewal_window", "enter"))
            for transition in entered:
                assert_due(transition, enter_at)

            exit_at = at("2026-01-21T00:00:00Z")  # now-1d reaches Jan 20 (exclusive bound)
            await s.advance_to(exit_at - MINUTE)
            await s.expect()
            await s.advance_to(exit_at + MINUTE)
            (exit_,) = await s.expect(("u5", "renewal_window", "exit"))
            assert_due(exit_, exit_at)

            await s.advance_to(at("2026-03-01T00:00:00Z"))
            await s.expect()  # renewal_due stays true: no later exit
            await s.assert_index("renewal_due", ["u5"], {"u5"})
            await s.assert_index("renewal_window", ["u5"], set())

    run(steps())


# -- S7 ---------------------------------------------------------------------------------------

def test_s7_include_dependency_cascade_and_cycle_rejection(settings: Settings) -> None:
    async def steps() -> None:
        async with scenario(settings, ['FILTER plan = "pro" ALIAS pro_users',
                                       'FILTER AND ( INCLUDE pro_users, visits > 5 ) ALIAS engaged_pro']) as s:
            await s.send({"user_id": "u7", "plan": "pro", "visits": 3})
            # pro_users is not subscribed in the spec; its own transitions are still produced.
            await s.expect(("u7", "pro_users", "enter"))

            await s.send({"user_id": "u7", "visits": 6})
            await s.expect(("u7", "engaged_pro", "enter"))

            await s.send({"user_id": "u7", "plan": "free"})  # only the included segment changes
            await s.expect(("u7", "pro_users", "exit"), ("u7", "engaged_pro", "exit"))
            await s.assert_index("engaged_pro", ["u7"], set())

            await publish_segment(s.registry, {"segment_ql": 'FILTER plan = "never" ALIAS cyc_b'})
            await publish_segment(s.registry, {"segment_ql": "FILTER INCLUDE cyc_b ALIAS cyc_a"})
            with pytest.raises(DefinitionError, match="(?i)cycle"):
                await publish_segment(s.registry, {"segment_ql": "FILTER INCLUDE cyc_a ALIAS cyc_b"})
            stored = [d["segment_ql"] for d in (await s.registry.all("segments")).values()
                      if d["slug_name"] == "cyc_b"]
            assert stored == ['FILTER plan = "never" ALIAS cyc_b']  # the refused one was not stored

    run(steps())


# -- S8 ---------------------------------------------------------------------------------------

def test_s8_multi_segment(settings: Settings) -> None:
    async def steps() -> None:
        async with scenario(settings, ["FILTER visits >= 1 ALIAS visitors",
                                       "FILTER visits >= 10 ALIAS frequent"]) as s:
            await s.send({"user_id": "u8", "visits": 10})
            await s.expect(("u8", "visitors", "enter"), ("u8", "frequent", "enter"))

            await s.send({"user_id": "u8", "visits": 5})
            await s.expect(("u8", "frequent", "exit"))
            await s.assert_index("visitors", ["u8"], {"u8"})
            await s.assert_index("frequent", ["u8"], set())

    run(steps())


# -- S9 ---------------------------------------------------------------------------------------

def deliveries(receiver: WebhookReceiver, path: str) -> Counter[Seen]:
    """(user, slug, event) of every segment event POSTed to ``path``; checks each request."""
    out: Counter[Seen] = Counter()
    for request in receiver.requests:
        if request.path != path:
            continue
        _check_delivery(request, path)
        for event in request.json["data"]["segment_events"]:
            out[(request.json["data"]["user_id"], event["slug"], event["event"])] += 1
    return out


def _check_delivery(request: ReceivedRequest, path: str) -> None:
    assert request.header("X-Test") == "1"
    assert request.json["meta"]["subscription_id"] == "sub" + path.replace("/", "-")


async def settled_deliveries(receiver: WebhookReceiver, path: str, count: int,
                             timeout: float = 15.0) -> Counter[Seen]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and sum(deliveries(receiver, path).values()) < count:
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # a duplicate or an extra delivery would arrive meanwhile
    return deliveries(receiver, path)


async def delivery_committed(settings: Settings, records: int) -> bool:
    """Whether the delivery group has committed ``records`` records of the transitions topic."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(settings.delivery_group)
    finally:
        await admin.close()
    done = sum(max(meta.offset, 0) for tp, meta in offsets.items()
               if tp.topic == settings.transitions_topic)
    return bool(done >= records)


def test_s9_backfill(settings: Settings) -> None:
    async def steps(receiver: WebhookReceiver) -> None:
        async with scenario(settings, ['FILTER plan = "pro" ALIAS pro_bf']) as s:
            delivery = DeliveryWorker(settings, s.redis)

            async def loaded() -> bool:
                version = await s.registry.version()
                live = await s.registry.live_worker_versions(wall_ms())
                return live.get(delivery.worker_id, -1) >= version

            def subscription(name: str, **extra: Any) -> dict[str, Any]:
                return {"id": f"sub-{name}", "name": name, "channel": "webhook",
                        "webhook_url": f"{receiver.url}{name}", "headers": {"X-Test": "1"},
                        "segment_ids": [s.ids["pro_bf"]], **extra}

            async with running(delivery.run):
                await s.send({"user_id": "u9", "plan": "pro"}, {"user_id": "u10", "plan": "pro"},
                             {"user_id": "u11", "plan": "free"})
                await s.expect(("u9", "pro_bf", "enter"), ("u10", "pro_bf", "enter"))
                # Past these with no subscription: only a backfill may deliver them later.
                await until(lambda: delivery_committed(settings, 2), "the delivery worker to pass the enters")

                # (a) withbackfill false: nothing.
                await publish_subscription(s.registry, subscription("nobf", withbackfill=False))
                await until(loaded, "the delivery worker to load sub-nobf")
                # (b) withbackfill true: the current members, once each.
                await publish_subscription(s.registry, subscription("bf", withbackfill=True))
                await until(loaded, "the delivery worker to load sub-bf")
                got = await settled_deliveries(receiver, "/bf", 2)
                assert deliveries(receiver, "/nobf") == Counter(), "withbackfill=false delivered"
                assert got == Counter({("u9", "pro_bf", "enter"): 1, ("u10", "pro_bf", "enter"): 1}), (
                    f"backfill delivered {dict(got)}")

                await s.send({"user_id": "u11", "plan": "pro"})
                await s.expect(("u11", "pro_bf", "enter"))
                got = await settled_deliveries(receiver, "/bf", 3)
                assert got[("u11", "pro_bf", "enter")] == 1 and sum(got.values()) == 3
                assert await settled_deliveries(receiver, "/nobf", 1, timeout=5) == Counter(
                    {("u11", "pro_bf", "enter"): 1})

                # (c) backfill is for a single segment only.
                with pytest.raises(DefinitionError, match="single segment"):
                    await publish_subscription(s.registry, {
                        **subscription("two", withbackfill=True),
                        "segment_ids": [s.ids["pro_bf"], "0" * 32]})

                # (d) deleted: later transitions deliver nothing to it.
                assert await s.registry.delete("subscriptions", "sub-bf")
                await until(loaded, "the delivery worker to drop sub-bf")
                await s.send({"user_id": "u12", "plan": "pro"})
                await s.expect(("u12", "pro_bf", "enter"))
                assert (await settled_deliveries(receiver, "/nobf", 2))[("u12", "pro_bf", "enter")] == 1
                assert sum(deliveries(receiver, "/bf").values()) == 3
            await s.assert_index("pro_bf", ["u9", "u10", "u11", "u12"], {"u9", "u10", "u11", "u12"})

    with WebhookReceiver() as receiver:
        run(steps(receiver))


# -- S10 --------------------------------------------------------------------------------------

OPS_MIX = """FILTER AND (
  email LIKE "*@example.com"          -- glob, case-sensitive
  tags INTERSECTS ("vip", "beta")     -- newline-separated group, comments allowed
  score BETWEEN 10 AND 20,            -- exclusive; trailing comma ok
  NOT landing CONTAINS "/admin"
) ALIAS ops_mix"""


def test_s10_operator_edge_cases(settings: Settings) -> None:
    async def steps() -> None:
        async with scenario(settings, [OPS_MIX, 'FILTER url LIKE "*blog*" ALIAS blog_single',
                                       'FILTER url LIKE "**blog**" ALIAS blog_double']) as s:
            await s.send({"user_id": "u10x", "email": "a@example.com", "tags": ["beta"],
                          "score": 10, "landing": "/home"})
            await s.expect()  # BETWEEN is exclusive: 10 is not > 10

            await s.send({"user_id": "u10x", "score": 15})
            await s.expect(("u10x", "ops_mix", "enter"))

            await s.send({"user_id": "u10x", "landing": "/admin/x"})
            await s.expect(("u10x", "ops_mix", "exit"))

            # "same user" in the spec: these carry u10x's user_id (S4 covers email-only events).
            await s.send({"user_id": "u10x", "landing": "/home", "email": "A@EXAMPLE.COM"})
            await s.expect()  # LIKE is case-sensitive

            await s.send({"user_id": "u10x", "email": "a@example.com"})
            await s.expect(("u10x", "ops_mix", "enter"))
            await s.assert_index("ops_mix", ["u10x"], {"u10x"})

            # Glob separator rule: a single * does not cross "/", ** does.
            await s.send({"user_id": "g1", "url": "www.x.com/blog/post"})
            await s.expect(("g1", "blog_double", "enter"))
            await s.assert_index("blog_single", ["u10x", "g1"], set())
            await s.assert_index("blog_double", ["u10x", "g1"], {"g1"})

    run(steps())

