"""WebhookSink against a real HTTP server on loopback (tests/support/receiver.py)."""

from __future__ import annotations

import asyncio
import random
import threading
from collections import defaultdict
from typing import Any

import orjson
import pytest
from standardwebhooks import Webhook

from processor.domain.payloads import Delivery, lytics_payload
from processor.domain.subscriptions import Subscription, signing_secret_from
from processor.domain.transitions import EntityRef, Transition
from processor.sinks.base import DeliveryResult
from processor.sinks.errors import DeliveryFailed, SinkBackpressure
from processor.sinks.webhook import WebhookSink
from tests.support.receiver import ReceivedRequest, Reply, WebhookReceiver

SECRET = signing_secret_from(bytes(range(1, 33)))


class FakeTime:
    """Drives the sink's retry clock: ``sleep`` records the delay and advances ``monotonic``."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def subscription(url: str, **overrides: Any) -> Subscription:
    body: dict[str, Any] = {"id": "sub-wh", "channel": "webhook", "segment_ids": ["seg1"],
                            "webhook_url": url + "hook", "signing_secret": SECRET,
                            "headers": {"best_number": "47", "X-Test": "1"}}
    body.update(overrides)
    return Subscription.model_validate(body)


def delivery(sub: Subscription, entity: str = "u1", seq: int = 0) -> Delivery:
    return Delivery(sub, Transition(
        transition_id=f"{entity}-{seq}", entity=EntityRef("user_id", entity), segment_id="seg1",
        segment_slug="demo_segment", event="enter" if seq % 2 == 0 else "exit",
        at_ms=1_767_312_000_000 + seq, identifiers={"user_id": entity},
        profile={"paying_user": "t", "seq": seq}))


def run(sink: WebhookSink, records: list[Delivery]) -> list[DeliveryResult]:
    async def go() -> list[DeliveryResult]:
        await sink.start()
        try:
            for record in records:
                await sink.add(record)
            return await sink.flush()
        finally:
            await sink.close()
    return asyncio.run(go())


def loopback_sink(**kwargs: Any) -> WebhookSink:
    kwargs.setdefault("timeout_s", 5.0)
    return WebhookSink(allow_loopback=True, **kwargs)


def test_delivers_signed_payload_with_custom_headers() -> None:
    with WebhookReceiver() as receiver:
        sub = subscription(receiver.url)
        record = delivery(sub)
        [result] = run(loopback_sink(), [record])
        [got] = receiver.wait_for(1)
    assert result.delivered and result.attempts == 1 and result.reason is None
    assert (got.method, got.path) == ("POST", "/hook")
    assert got.header("best_number") == "47" and got.header("x-test") == "1"
    assert got.header("content-type") == "application/json"
    assert got.header("webhook-id") == record.id
    verified = Webhook(SECRET).verify(got.body, got.headers)
    assert verified == got.json == lytics_payload(sub, record.transition, version="v2")
    assert got.json["meta"]["subscription_id"] == "sub-wh"
    assert got.json["data"]["segment_events"][0]["slug"] == "demo_segment"


def test_unsigned_when_the_subscription_has_no_secret() -> None:
    with WebhookReceiver() as receiver:
        [result] = run(loopback_sink(), [delivery(subscription(receiver.url, signing_secret=None))])
        [got] = receiver.wait_for(1)
    assert result.delivered
    assert got.header("webhook-signature") is None and got.header("webhook-id")


def test_v1_format_is_sent_when_configured() -> None:
    with WebhookReceiver() as receiver:
        sub = subscription(receiver.url, payload_format="v1")
        run(loopback_sink(), [delivery(sub)])
        [got] = receiver.wait_for(1)
    assert got.json["segment"] == {"id": "seg1", "slug": "demo_segment"}
    assert got.json["event"] == "enter" and "segment_events" not in got.json["data"]


def test_500_then_200_is_retried_with_the_same_webhook_id() -> None:
    clock = FakeTime()
    with WebhookReceiver(lambda i, _r: 500 if i < 2 else 200) as receiver:
        [result] = run(loopback_sink(sleep=clock.sleep, monotonic=clock.monotonic,
                                     backoff_base_s=0.5, backoff_cap_s=10, rng=random.Random(3)),
                       [delivery(subscription(receiver.url))])
        got = receiver.wait_for(3)
    assert result.delivered and result.attempts == 3
    assert len({r.header("webhook-id") for r in got}) == 1
    for request in got:  # every attempt is freshly signed and verifies
        Webhook(SECRET).verify(request.body, request.headers)
    assert len(clock.sleeps) == 2
    assert 0 <= clock.sleeps[0] <= 0.5 and 0 <= clock.sleeps[1] <= 1.0  # full jitter bounds


def test_400_is_not_retried_and_the_record_is_dead_with_the_reason() -> None:
    bad = Reply(status=400, body=b'{"error":"unknown field"}')
    with WebhookReceiver(lambda _i, _r: bad) as receiver:
        [result] = run(loopback_sink(), [delivery(subscription(receiver.url))])
        assert len(receiver.wait_for(1)) == 1
    assert result.outcome == "dead" and result.attempts == 1
    assert result.reason == 'HTTP 400: {"error":"unknown field"}'


def test_redirects_are_not_followed() -> None:
    moved = Reply(status=302, headers={"Location": "http://169.254.169.254/"})
    with WebhookReceiver(lambda _i, _r: moved) as receiver:
        [result] = run(loopback_sink(), [delivery(subscription(receiver.url))])
        assert len(receiver.requests) == 1
    assert result.outcome == "dead" and "redirects are not followed" in (result.reason or "")


def test_429_retry_after_is_honoured_in_real_time() -> None:
    def behaviour(index: int, _r: ReceivedRequest) -> Any:
        return (429, {"Retry-After": "1"}, 0.0) if index == 0 else 200

    with WebhookReceiver(behaviour) as receiver:
        [result] = run(loopback_sink(), [delivery(subscription(receiver.url))])
        first, second = receiver.wait_for(2)
    assert result.delivered and result.attempts == 2
    assert second.received_at - first.received_at >= 0.95


def test_retry_after_wins_over_backoff() -> None:
    clock = FakeTime()
    script = [(503, {"Retry-After": "7"}, 0.0), (429, {"Retry-After": "2"}, 0.0), 200]
    with WebhookReceiver(lambda i, _r: script[i]) as receiver:
        [result] = run(loopback_sink(sleep=clock.sleep, monotonic=clock.monotonic),
                       [delivery(subscription(receiver.url))])
        receiver.wait_for(3)
    assert result.delivered and clock.sleeps == [7.0, 2.0]


def test_long_retry_after_raises_backpressure_and_keeps_the_records() -> None:
    calls: list[int] = []

    def behaviour(index: int, _r: ReceivedRequest) -> Any:
        calls.append(index)
        return (429, {"Retry-After": "3600"}, 0.0) if index == 0 else 200

    with WebhookReceiver(behaviour) as receiver:
        sub = subscription(receiver.url)
        records = [delivery(sub, "u1", 0), delivery(sub, "u1", 1)]

        async def go() -> tuple[SinkBackpressure, list[DeliveryResult]]:
            sink = loopback_sink(max_retry_after_s=60)
            await sink.start()
            for record in records:
                await sink.add(record)
            with pytest.raises(SinkBackpressure) as caught:
                await sink.flush()
            later = await sink.flush()
            await sink.close()
            return caught.value, later

        pressure, later = asyncio.run(go())
        got = receiver.wait_for(3)
    assert pressure.retry_after == 3600 and pressure.retriable and pressure.results == []
    assert [r.delivery for r in later] == records and all(r.delivered for r in later)
    assert [r.json["data"]["seq"] for r in got] == [0, 0, 1]


def test_retry_budget_by_attempts_and_by_time() -> None:
    clock = FakeTime()
    with WebhookReceiver(503) as receiver:
        sub = subscription(receiver.url)
        [by_attempts] = run(loopback_sink(max_attempts=3, sleep=clock.sleep,
                                          monotonic=clock.monotonic), [delivery(sub)])
        assert len(receiver.wait_for(3)) == 3
        receiver.clear()
        [by_time] = run(loopback_sink(max_attempts=100, max_elapsed_s=30, backoff_base_s=10,
                                      backoff_cap_s=10, rng=random.Random(1), sleep=clock.sleep,
                                      monotonic=clock.monotonic), [delivery(sub)])
    assert by_attempts.outcome == "dead" and by_attempts.attempts == 3
    assert by_attempts.reason == "gave up after 3 attempts: HTTP 503"
    assert by_time.outcome == "dead" and (by_time.reason or "").startswith("retry budget of 30s")


def test_a_stalled_request_times_out_and_is_retried() -> None:
    with WebhookReceiver(lambda i, _r: Reply(delay_s=30.0) if i == 0 else Reply()) as receiver:
        [result] = run(loopback_sink(timeout_s=0.5, backoff_base_s=0.01),
                       [delivery(subscription(receiver.url))])
        first, second = receiver.wait_for(2)
    assert result.delivered and result.attempts == 2
    assert first.header("webhook-id") == second.header("webhook-id")


def test_per_entity_order_holds_under_random_failures() -> None:
    rng, lock = random.Random(11), threading.Lock()
    answered: dict[int, int] = {}

    def behaviour(index: int, _r: ReceivedRequest) -> Any:
        with lock:
            status = 500 if rng.random() < 0.3 else 200
            answered[index] = status
            return Reply(status=status, delay_s=rng.random() * 0.01)

    entities, per_entity = 12, 8
    with WebhookReceiver(behaviour) as receiver:
        sub = subscription(receiver.url)
        records = [delivery(sub, f"u{e}", s) for s in range(per_entity) for e in range(entities)]
        results = run(loopback_sink(concurrency=4, max_attempts=50, backoff_base_s=0.001,
                                    backoff_cap_s=0.005), records)
        got = receiver.requests
    assert [r.delivery for r in results] == records  # results in the order added
    assert all(r.delivered for r in results)
    attempts: dict[str, list[int]] = defaultdict(list)
    delivered: dict[str, list[int]] = defaultdict(list)
    for request in got:
        entity, seq = request.json["id"], request.json["data"]["seq"]
        attempts[entity].append(seq)
        if answered[request.index] == 200:
            delivered[entity].append(seq)
    assert sum(1 for s in answered.values() if s == 500) > 10  # failures really happened
    for entity in attempts:
        assert attempts[entity] == sorted(attempts[entity]), entity  # never overtakes
        assert delivered[entity] == list(range(per_entity)), entity


def test_loopback_target_is_refused_unless_allowed() -> None:
    with WebhookReceiver() as receiver:
        [result] = run(WebhookSink(), [delivery(subscription(receiver.url))])
        assert receiver.requests == []
    assert result.outcome == "dead" and result.attempts == 1
    assert "loopback address" in (result.reason or "")


def test_sink_outside_its_lifecycle_refuses_work() -> None:
    async def go() -> None:
        sink = WebhookSink()
        with pytest.raises(DeliveryFailed, match="outside start"):
            await sink.add(delivery(subscription("http://127.0.0.1/")))
        await sink.start()
        await sink.close()
        with pytest.raises(DeliveryFailed, match="outside start"):
            await sink.flush()
    asyncio.run(go())


def test_body_is_exactly_what_was_signed() -> None:
    with WebhookReceiver() as receiver:
        sub = subscription(receiver.url)
        record = delivery(sub)
        run(loopback_sink(), [record])
        [got] = receiver.wait_for(1)
    assert got.body == orjson.dumps(lytics_payload(sub, record.transition, version="v2"))
