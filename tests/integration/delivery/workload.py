"""Shared pieces of the delivery integration tests: a paced workload of segment flips through
the real event worker, the expected transitions, and reading what a receiver accepted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import orjson
from redis.asyncio import Redis

from processor.publishing import publish_subscription
from processor.settings import Settings
from processor.sinks.lane import LanePolicy
from processor.state.registry import Registry
from processor.streams.delivery import DeliveryWorker
from tests.support.kafka_io import produce
from tests.support.receiver import ReceivedRequest


def user(i: int) -> str:
    return f"flip-{i}"


def expected_events(users: int, rounds: int) -> dict[str, list[str]]:
    """Each user's cart goes 1, 0, 1, 0...: enter, exit, enter, exit..."""
    return {user(u): ["enter" if r % 2 == 0 else "exit" for r in range(rounds)]
            for u in range(users)}


async def produce_flips(settings: Settings, users: int, rounds: int, seconds: float) -> None:
    """``rounds`` events per user, spread evenly over ``seconds``; each one flips the segment
    and carries ``sent_ms`` (its produce time), which the payload's profile repeats."""
    pause = seconds / rounds
    for r in range(rounds):
        started = time.monotonic()
        values = [orjson.dumps({"user_id": user(u), "cart_items": 1 - r % 2,
                                "sent_ms": int(time.time() * 1000)}) for u in range(users)]
        await produce(settings, values, keys=[user(u).encode() for u in range(users)])
        await asyncio.sleep(max(0.0, pause - (time.monotonic() - started)))


async def subscribe(settings: Settings, sub_id: str, url: str, **extra: object) -> None:
    redis = Redis.from_url(settings.redis_url)
    try:
        await publish_subscription(Registry(redis), {
            "id": sub_id, "name": sub_id, "channel": "webhook", "segment_ids": ["active_cart"],
            "webhook_url": url, **extra})
    finally:
        await redis.aclose()


async def run_delivery(settings: Settings, stop: asyncio.Event, policy: LanePolicy | None = None,
                       metrics_port: int | None = None,
                       seen: Callable[[DeliveryWorker], None] | None = None) -> None:
    redis = Redis.from_url(settings.redis_url)
    try:
        worker = DeliveryWorker(settings, redis, policy=policy, metrics_port=metrics_port,
                                metrics_addr="127.0.0.1")
        if seen is not None:
            seen(worker)
        await worker.run(stop)
    finally:
        await redis.aclose()


def accepted_by_entity(requests: list[ReceivedRequest],
                       accepted: Callable[[ReceivedRequest], bool]) -> dict[str, list[str]]:
    """Per user, the events of the deliveries the receiver accepted, in arrival order, each
    delivery id counted at its first acceptance. A body cut short (the sender was killed while
    sending) was never accepted."""
    seen: set[str] = set()
    out: dict[str, list[str]] = {}
    for request in sorted(requests, key=lambda r: r.received_at):
        webhook_id = request.header("webhook-id")
        if request.json is None or not accepted(request) or webhook_id in seen:
            continue
        seen.add(str(webhook_id))
        body = request.json
        out.setdefault(body["id"], []).append(body["data"]["segment_events"][0]["event"])
    return out


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")
