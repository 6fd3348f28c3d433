"""Dead letters end to end: a receiver refusing with 400 sends the delivery to the DLQ with
the reason; ``dlq list`` shows it; once the receiver is fixed, ``dlq redeliver`` sends it back
through its subscription with the same webhook-id, to that subscription only. Deleting a
subscription stops its deliveries and drops its parked records."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from typer.testing import CliRunner

from processor import cli_delivery, delivery_admin
from processor.domain.transitions import EntityRef, Transition
from processor.settings import Settings
from processor.state.deliveries import ParkStore
from processor.state.registry import Registry
from processor.streams import kafka
from processor.streams.kafka import ensure_topics
from tests.conftest import settings_env
from tests.integration.delivery.workload import run_delivery, subscribe
from tests.integration.test_worker import publish_demo
from tests.support.receiver import WebhookReceiver
from tests.support.running import running, wait_loaded

pytestmark = pytest.mark.integration


def transition(n: int) -> Transition:
    return Transition(f"dl-{n}", EntityRef("user_id", f"dl-user-{n}"), "seg-x", "active_cart",
                      "enter", 1_000 + n)


async def produce_transitions(settings: Settings, transitions: list[Transition]) -> None:
    producer = kafka.producer(settings)
    await producer.start()
    try:
        for t in transitions:
            await producer.send_and_wait(settings.transitions_topic, t.to_json(),
                                         key=str(t.entity).encode())
    finally:
        await producer.stop()


def test_dead_letters_are_listed_and_redelivered(settings: Settings,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    cli_delivery.get_settings.cache_clear()
    runner = CliRunner()
    with WebhookReceiver(400) as target, WebhookReceiver() as bystander:
        async def scenario() -> tuple[str, str, str]:
            await ensure_topics(settings)
            await publish_demo(settings)
            await subscribe(settings, "sub-dl", target.url)
            await subscribe(settings, "sub-by", bystander.url)
            async with running(lambda s: run_delivery(settings, s)):
                await wait_loaded(settings)
                await produce_transitions(settings, [transition(1), transition(2)])
                await asyncio.to_thread(bystander.wait_for, 2, 20.0)
                dead = await _wait_dead(settings, 2)
                listed = await asyncio.to_thread(runner.invoke, cli_delivery.app,
                                                 ["list", "--subscription", "sub-dl"])
                target.set_behaviour(200)
                target.clear()
                redone = await asyncio.to_thread(
                    runner.invoke, cli_delivery.app,
                    ["redeliver", "--delivery-id", str(dead[0].delivery_id)])
                await asyncio.to_thread(target.wait_for, 1, 20.0)
                await asyncio.sleep(1.0)
            assert dead[0].reason.startswith("HTTP 400"), dead[0]
            return listed.output, redone.output, str(dead[0].delivery_id)

        listed, redone, dead_id = asyncio.run(scenario())
    cli_delivery.get_settings.cache_clear()
    assert listed.count("sub-dl") == 2 and "HTTP 400" in listed, listed
    assert "redelivered 1 dead letters" in redone, redone
    assert len(target.requests) == 1 and len(bystander.requests) == 2  # only sub-dl got it again
    assert target.requests[0].header("webhook-id") == dead_id


def test_deleting_a_subscription_stops_its_deliveries_and_drops_parked_records(
    settings: Settings,
) -> None:
    with WebhookReceiver(503) as target:
        async def scenario() -> int:
            await ensure_topics(settings)
            await publish_demo(settings)
            await subscribe(settings, "sub-gone", target.url)
            redis = Redis.from_url(settings.redis_url)
            try:
                async with running(lambda s: run_delivery(settings, s)):
                    await wait_loaded(settings)
                    await produce_transitions(settings, [transition(n) for n in range(5)])
                    await _wait_parked(redis, "sub-gone", 5)
                    await Registry(redis).delete("subscriptions", "sub-gone")
                    await wait_loaded(settings)
                    await asyncio.sleep(0.5)
                    before = len(target.requests)
                    await asyncio.sleep(3.0)
                    assert len(target.requests) == before
                return await ParkStore(redis).count("sub-gone", range(settings.partitions))
            finally:
                await redis.aclose()

        assert asyncio.run(scenario()) == 0


async def _wait_dead(settings: Settings, count: int) -> list[delivery_admin.DeadDelivery]:
    for _ in range(80):
        found = await delivery_admin.list_dead_letters(settings, subscription_id="sub-dl")
        if len(found) >= count:
            return found
        await asyncio.sleep(0.25)
    raise AssertionError("dead letters did not arrive")


async def _wait_parked(redis: Redis, sub_id: str, count: int) -> None:
    for _ in range(80):
        if await ParkStore(redis).count(sub_id, range(4)) >= count:
            return
        await asyncio.sleep(0.25)
    raise AssertionError("records were not parked")
