"""Reading and writing real Kafka topics from tests (no consumer group, no commits)."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from processor.settings import Settings
from processor.streams import kafka


async def produce(settings: Settings, values: list[bytes], *, keys: list[bytes | None] | None = None,
                  topic: str | None = None, stream: str | None = None) -> None:
    """Produce ``values``; with ``stream`` they carry the header the collectors set (the worker
    then decodes them as that stream: ``snowplow`` enriched, any other generic JSON)."""
    headers = [("stream", stream.encode())] if stream else []
    producer = kafka.producer(settings)
    await producer.start()
    try:
        futures = []
        for i, value in enumerate(values):
            key = keys[i] if keys else None
            futures.append(await producer.send(topic or settings.events_topic, value, key=key,
                                               headers=headers))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_topic(settings: Settings, topic: str, *, at_least: int, timeout: float = 30.0,
                     settle: float = 0.0) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` from the beginning, waiting until ``at_least`` arrived, then
    ``settle`` seconds more so that unexpected extra records would be seen too."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                enable_auto_commit=False, isolation_level="read_committed")
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        tps = [TopicPartition(topic, p) for p in range(kafka.project_topics(settings)[topic])]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[ConsumerRecord[bytes, bytes]] = []
        settle_until: float | None = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for rs in batch.values():
                records.extend(rs)
            if len(records) >= at_least:
                settle_until = settle_until or time.monotonic() + settle
                if time.monotonic() >= settle_until:
                    break
        return records
    finally:
        await consumer.stop()
