"""Isolation under chaos: one receiver answers 500 to about half the requests and stalls 10 s
on some, for a minute of traffic through the real event worker and delivery worker; a second
subscription's receiver is healthy. The chaos starts after a calm quarter of a minute in which
both receivers answer 200, so the healthy subscription's delays are printed for both periods
(unchanged by the chaos: printed, not asserted; the benchmark measures speed). Every transition
reaches both (by delivery id), in each entity's order."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from processor.settings import Settings
from processor.sinks.lane import LanePolicy
from processor.streams.kafka import ensure_topics
from tests.integration.delivery.workload import (
    accepted_by_entity,
    expected_events,
    percentile,
    produce_flips,
    run_delivery,
    subscribe,
)
from tests.integration.test_worker import publish_demo, run_worker
from tests.support.receiver import ReceivedRequest, Reply, WebhookReceiver
from tests.support.running import running, wait_loaded

pytestmark = pytest.mark.integration

USERS, ROUNDS, SECONDS = 40, 30, 75.0
CALM_S = 15.0  # the first 15 s (6 rounds) are calm, the last minute (24 rounds) chaotic
STALL_S = 10.0
POLICY = LanePolicy(in_place_attempts=2, in_place_budget_s=1.0, max_attempts=60,
                    backoff_base_s=0.2, backoff_cap_s=2.0)


class Chaos:
    """The failing receiver's behaviour: 200 until ``start`` is called, then ``chaos``."""

    def __init__(self) -> None:
        self.since: float | None = None  # receiver clock (time.time) when the chaos began

    def start(self) -> None:
        self.since = time.time()

    def chaotic(self, request: ReceivedRequest) -> bool:
        return self.since is not None and request.received_at >= self.since

    def __call__(self, index: int, request: ReceivedRequest) -> Reply:
        return chaos(index) if self.chaotic(request) else Reply(status=200)

    def accepted(self, request: ReceivedRequest) -> bool:
        """Whether the answer to ``request`` was a prompt 200."""
        if not self.chaotic(request):
            return True
        reply = chaos(request.index)
        return reply.status == 200 and reply.delay_s == 0


def chaos(index: int) -> Reply:
    """Deterministic per request index: 5% stall 10 s, 50% answer 500, the rest 200."""
    draw = random.Random(index * 7919 + 1).random()
    if draw < 0.05:
        return Reply(status=200, delay_s=STALL_S)  # the sender gives up before this answer
    if draw < 0.55:
        return Reply(status=500, body=b"chaos")
    return Reply(status=200)


def test_a_failing_subscription_does_not_delay_a_healthy_one(settings: Settings) -> None:
    settings = settings.model_copy(update={"webhook_timeout_s": 2.0})
    expected = expected_events(USERS, ROUNDS)
    total = USERS * ROUNDS
    behaviour = Chaos()
    with WebhookReceiver(behaviour) as bad, WebhookReceiver() as good:
        async def scenario() -> None:
            await ensure_topics(settings)
            await publish_demo(settings)
            await subscribe(settings, "sub-chaos", bad.url)
            await subscribe(settings, "sub-healthy", good.url)
            async with running(lambda s: run_worker(settings, s)), \
                    running(lambda s: run_delivery(settings, s, POLICY)):
                await wait_loaded(settings, workers=2)
                calm = asyncio.get_running_loop().call_later(CALM_S, behaviour.start)
                await produce_flips(settings, USERS, ROUNDS, SECONDS)
                calm.cancel()
                await asyncio.to_thread(good.wait_for, total, 30.0)
                await _wait_accepted(bad, behaviour.accepted, total, timeout=40.0)

        asyncio.run(scenario())
        healthy = good.requests
        assert accepted_by_entity(healthy, lambda r: True) == expected
        assert len({r.header("webhook-id") for r in healthy}) == total
        assert accepted_by_entity(bad.requests, behaviour.accepted) == expected
        assert behaviour.since is not None
        failed = sum(1 for r in bad.requests if not behaviour.accepted(r))
        assert failed > 0  # the chaos did happen
        print(f"\nchaos: {len(bad.requests)} requests to the failing receiver ({failed} failed or "
              f"stalled, all in the last minute); healthy subscription delay produce->receipt "
              f"(of which transition->receipt):")
        for period, rows in (("calm ", [r for r in healthy if r.received_at < behaviour.since]),
                             ("chaos", [r for r in healthy if r.received_at >= behaviour.since])):
            delays = [r.received_at * 1000 - r.json["data"]["sent_ms"] for r in rows]
            hops = [r.received_at * 1000 - _event_ms(r) for r in rows]
            print(f"  {period} {len(rows)} deliveries: p50 {percentile(delays, 50):.0f} "
                  f"({percentile(hops, 50):.0f}) ms, p99 {percentile(delays, 99):.0f} "
                  f"({percentile(hops, 99):.0f}) ms, max {max(delays):.0f} ms")


def _event_ms(request: ReceivedRequest) -> float:
    """When the worker stamped the transition (the event's time: it carries none, so the
    worker's clock at decode), from the payload's ``segment_events``."""
    event = request.json["data"]["segment_events"][0]
    stamp = datetime.strptime(event[event["event"]], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return stamp.timestamp() * 1000


async def _wait_accepted(receiver: WebhookReceiver, accepted: Callable[[ReceivedRequest], bool],
                         count: int, *, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        ids = {r.header("webhook-id") for r in receiver.requests if accepted(r)}
        if len(ids) >= count:
            return
        await asyncio.sleep(0.25)
    ids = {r.header("webhook-id") for r in receiver.requests if accepted(r)}
    raise AssertionError(f"the failing receiver accepted {len(ids)} of {count} deliveries")
