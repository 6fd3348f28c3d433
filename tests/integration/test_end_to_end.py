"""The walking skeleton end to end: events on Kafka -> worker -> transitions -> delivery
worker -> a real HTTP receiver. Exactly one enter and one exit arrive, with the subscription's
custom header and a Standard Webhooks signature that verifies."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from standardwebhooks.webhooks import Webhook

from processor.domain.segments import segment_id_for
from processor.publishing import publish_subscription
from processor.settings import Settings
from processor.state.registry import Registry
from processor.streams.kafka import ensure_topics
from tests.integration.delivery.workload import run_delivery
from tests.integration.test_worker import event, publish_demo
from tests.support.kafka_io import produce
from tests.support.receiver import WebhookReceiver
from tests.support.running import run_worker, running, wait_loaded

pytestmark = pytest.mark.integration


def test_enter_and_exit_reach_the_webhook_once(settings: Settings) -> None:
    with WebhookReceiver() as receiver:
        async def scenario() -> str:
            await ensure_topics(settings)
            await publish_demo(settings)
            redis = Redis.from_url(settings.redis_url)
            try:
                subscription = await publish_subscription(Registry(redis), {
                    "id": "sub-e2e", "name": "e2e", "channel": "webhook",
                    "segment_ids": ["active_cart"], "webhook_url": receiver.url,
                    "headers": {"best_number": "47"},
                })
            finally:
                await redis.aclose()
            async with running(lambda s: run_worker(settings, s)), \
                    running(lambda s: run_delivery(settings, s)):
                await wait_loaded(settings, workers=2)
                await produce(settings, [event("e2e-1", cart_items=2), event("e2e-2", cart_items=0),
                                         event("e2e-1", cart_items=5), event("e2e-1", cart_items=0)],
                              keys=[b"e2e-1", b"e2e-2", b"e2e-1", b"e2e-1"])
                await asyncio.to_thread(receiver.wait_for, 2, 30.0)
                await asyncio.sleep(1.0)  # anything extra (a duplicate) would arrive meanwhile
            assert subscription.signing_secret is not None
            return subscription.signing_secret

        secret = asyncio.run(scenario())
        requests = receiver.requests
        assert len(requests) == 2
        bodies = [r.json for r in requests]
        events = [b["data"]["segment_events"][0]["event"] for b in bodies]
        assert events == ["enter", "exit"]
        for request, body in zip(requests, bodies, strict=True):
            assert request.header("best_number") == "47"
            segment_event = body["data"]["segment_events"][0]
            assert segment_event["id"] == segment_id_for("active_cart")
            assert segment_event["slug"] == "active_cart"
            assert segment_event[segment_event["event"]]  # the enter / exit time
            assert body["data"]["user_id"] == "e2e-1"
            assert body["meta"]["subscription_id"] == "sub-e2e"
            Webhook(secret).verify(request.body, {k: v for k, v in request.headers.items()})
        assert len({r.header("webhook-id") for r in requests}) == 2
