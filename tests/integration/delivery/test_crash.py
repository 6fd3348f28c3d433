"""SIGKILL the delivery worker (a real subprocess) at random moments while transitions flow to
a receiver that also fails 10% of requests: every transition is delivered, in each entity's
order, and a duplicate only ever repeats a webhook-id with the same body."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path

import pytest

from processor.settings import Settings
from processor.streams.kafka import ensure_topics
from tests.conftest import settings_env
from tests.integration.delivery.workload import (
    accepted_by_entity,
    expected_events,
    produce_flips,
    subscribe,
)
from tests.integration.test_worker import publish_demo, run_worker
from tests.support.receiver import ReceivedRequest, Reply, WebhookReceiver
from tests.support.running import running, spawn, wait_loaded

pytestmark = pytest.mark.integration

USERS, ROUNDS, SECONDS = 50, 20, 20.0
KILLS = 3


def flaky(index: int) -> Reply:
    return Reply(status=500) if random.Random(index).random() < 0.1 else Reply(status=200)


def ok(request: ReceivedRequest) -> bool:
    return flaky(request.index).status == 200


def test_sigkill_of_the_delivery_worker_loses_nothing(settings: Settings, tmp_path: Path) -> None:
    env = settings_env(settings)
    log = tmp_path / "delivery.log"
    rng = random.Random(11)
    expected = expected_events(USERS, ROUNDS)
    total = USERS * ROUNDS
    with WebhookReceiver(lambda i, _r: flaky(i)) as receiver:
        async def scenario() -> None:
            await ensure_topics(settings)
            await publish_demo(settings)
            await subscribe(settings, "sub-crash", receiver.url)
            async with running(lambda s: run_worker(settings, s)):
                delivery = spawn("delivery", env, log)
                try:
                    producing = asyncio.create_task(produce_flips(settings, USERS, ROUNDS, SECONDS))
                    for _ in range(KILLS):
                        await wait_loaded(settings, timeout=60, pid=delivery.pid)
                        await asyncio.sleep(rng.uniform(1.0, 4.0))
                        os.kill(delivery.pid, signal.SIGKILL)
                        delivery.wait()
                        delivery = spawn("delivery", env, log)
                    await producing
                    print(f"\nproduced; {len(receiver.requests)} requests so far", flush=True)
                    await _wait_accepted(receiver, total, timeout=60.0)
                    await asyncio.sleep(1.0)
                finally:
                    delivery.terminate()
                    delivery.wait(timeout=30)

        asyncio.run(scenario())
        requests = receiver.requests
        assert accepted_by_entity(requests, ok) == expected, log.read_text()[-3000:]
        bodies: dict[str, bytes] = {}
        for request in (r for r in requests if r.json is not None):
            webhook_id = str(request.header("webhook-id"))
            assert bodies.setdefault(webhook_id, request.body) == request.body
        assert len(bodies) == total
        print(f"\ncrash: {len(requests)} requests for {total} transitions "
              f"({len(requests) - total} repeats, retries included)")


async def _wait_accepted(receiver: WebhookReceiver, count: int, *, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        got = {r.header("webhook-id") for r in receiver.requests if ok(r) and r.json is not None}
        if len(got) >= count:
            return
        await asyncio.sleep(0.25)
