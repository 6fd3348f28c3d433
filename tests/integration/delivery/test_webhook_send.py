"""``WebhookSink.send`` (the lanes' per-record path) against the loopback receiver: the same
body, signature and delivery id as ``add`` + ``flush``, retries that count the first attempt and
keep the webhook-id, and a long ``Retry-After`` answered ``retry``."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from standardwebhooks import Webhook

from processor.domain.payloads import Delivery, lytics_payload
from processor.sinks.base import DeliveryResult
from processor.sinks.http1 import Http1Client
from processor.sinks.webhook import WebhookSink
from tests.integration.test_webhook_sink import SECRET, delivery, subscription
from tests.support.receiver import Reply, WebhookReceiver


def send_all(records: list[Delivery], **kwargs: Any) -> list[DeliveryResult | BaseException]:
    """Each record through ``send`` (several at once), on a shared pool as the lanes use it."""
    async def go() -> list[DeliveryResult | BaseException]:
        client = Http1Client()
        sinks = [WebhookSink(allow_loopback=True, client=client, park_retriable=True,
                             **{"timeout_s": 5.0, **kwargs}) for _ in records]
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[DeliveryResult | BaseException]] = []
        try:
            for sink, record in zip(sinks, records, strict=True):
                await sink.start()
                done: asyncio.Future[DeliveryResult | BaseException] = loop.create_future()
                futures.append(done)
                assert sink.send(record, done.set_result)
            return list(await asyncio.wait_for(asyncio.gather(*futures), 30))
        finally:
            for sink in sinks:
                await sink.close()
            await client.aclose()
    return asyncio.run(go())


def test_send_delivers_what_flush_would_signed_and_on_kept_alive_connections() -> None:
    with WebhookReceiver() as receiver:
        sub = subscription(receiver.url)
        records = [delivery(sub, f"u{n}") for n in range(20)]
        results = send_all(records)
        got = receiver.wait_for(20)
    assert all(isinstance(r, DeliveryResult) and r.delivered and r.attempts == 1 for r in results)
    by_id = {r.header("webhook-id"): r for r in got}
    for record in records:
        request = by_id[record.id]
        Webhook(SECRET).verify(request.body, request.headers)
        assert request.body == orjson.dumps(lytics_payload(sub, record.transition, version="v2"))
        assert request.header("best_number") == "47"


def test_a_failed_first_attempt_is_retried_with_the_same_id_and_counted() -> None:
    with WebhookReceiver(lambda i, _r: 500 if i < 2 else 200) as receiver:
        [result] = send_all([delivery(subscription(receiver.url))], max_attempts=5,
                            backoff_base_s=0.01, backoff_cap_s=0.02)
        got = receiver.wait_for(3)
    assert isinstance(result, DeliveryResult) and result.delivered and result.attempts == 3
    assert len({r.header("webhook-id") for r in got}) == 1


def test_in_place_attempts_spent_or_a_long_retry_after_answer_retry() -> None:
    with WebhookReceiver(500) as failing:
        [spent] = send_all([delivery(subscription(failing.url))], max_attempts=2,
                           backoff_base_s=0.01, backoff_cap_s=0.02)
        assert len(failing.wait_for(2)) == 2
    with WebhookReceiver(lambda i, _r: Reply(status=429, headers={"Retry-After": "600"})) as busy:
        [deferred] = send_all([delivery(subscription(busy.url))])
    assert isinstance(spent, DeliveryResult) and spent.outcome == "retry" and spent.attempts == 2
    assert isinstance(deferred, DeliveryResult) and deferred.outcome == "retry"
    assert deferred.retry_after == 600.0
