"""KafkaSink against the real broker from ``deploy/services.sh up``."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from processor.domain.payloads import Delivery
from processor.domain.subscriptions import Subscription
from processor.domain.transitions import EntityRef, Transition
from processor.sinks.base import DeliveryResult
from processor.sinks.kafka import KafkaSink

PARTITIONS = 3


def subscription(topic: str) -> Subscription:
    return Subscription.model_validate({"id": "sub-kafka", "channel": "kafka",
                                        "segment_ids": ["seg1"], "topic": topic})


def delivery(sub: Subscription, entity: str, seq: int) -> Delivery:
    return Delivery(sub, Transition(
        transition_id=f"{entity}-{seq}", entity=EntityRef("user_id", entity), segment_id="seg1",
        segment_slug="demo", event="enter" if seq % 2 == 0 else "exit", at_ms=1_000 + seq,
        identifiers={"user_id": entity}, profile={"seq": seq}))


async def create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    finally:
        await admin.close()


async def read_all(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list[object]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[object] = []
        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def deliver(bootstrap: str, records: list[Delivery], **kwargs: object) -> list[DeliveryResult]:
    sink = KafkaSink(bootstrap_servers=bootstrap, **kwargs)  # type: ignore[arg-type]
    await sink.start()
    try:
        for record in records:
            await sink.add(record)
        return await sink.flush()
    finally:
        await sink.close()


def test_records_are_keyed_by_entity_and_ordered(kafka_bootstrap: str) -> None:
    topic = f"sink-kafka-{uuid.uuid4().hex[:10]}"
    sub = subscription(topic)
    records = [delivery(sub, f"u{e}", s) for s in range(10) for e in range(20)]

    async def go() -> tuple[list[DeliveryResult], list[object]]:
        await create_topic(kafka_bootstrap, topic)
        results = await deliver(kafka_bootstrap, records)
        return results, await read_all(kafka_bootstrap, topic, len(records))

    results, consumed = asyncio.run(go())
    assert [r.delivery for r in results] == records and all(r.delivered for r in results)
    assert len(consumed) == len(records)
    by_key: dict[bytes, list[int]] = defaultdict(list)
    partitions_of: dict[bytes, set[int]] = defaultdict(set)
    for message in consumed:
        value = orjson.loads(message.value)  # type: ignore[attr-defined]
        assert value["subscription_id"] == "sub-kafka"
        assert value["entity"] == {"key": "user_id", "id": value["identifiers"]["user_id"]}
        headers = dict(message.headers)  # type: ignore[attr-defined]
        assert headers["delivery-id"].decode() == value["delivery_id"]
        by_key[message.key].append(value["profile"]["seq"])  # type: ignore[attr-defined]
        partitions_of[message.key].add(message.partition)  # type: ignore[attr-defined]
    assert set(by_key) == {f"user_id:u{e}".encode() for e in range(20)}
    assert all(seqs == list(range(10)) for seqs in by_key.values())
    assert all(len(p) == 1 for p in partitions_of.values())  # one entity, one partition


def test_missing_topic_is_retried_until_the_budget_then_dead(kafka_bootstrap: str) -> None:
    sub = subscription(f"sink-kafka-missing-{uuid.uuid4().hex[:10]}")
    records = [delivery(sub, "u1", 0), delivery(sub, "u1", 1), delivery(sub, "u2", 0)]
    started = time.monotonic()
    results = asyncio.run(deliver(kafka_bootstrap, records, request_timeout_ms=1000,
                                  max_attempts=2, backoff_base_s=0.01))
    assert time.monotonic() - started < 10  # the metadata wait is paid once per round, not per record
    assert [r.outcome for r in results] == ["dead", "dead", "dead"]
    assert all(r.attempts == 2 for r in results)
    assert all("topic does not exist" in (r.reason or "") for r in results)
