"""Kafka clients and topic set-up, built from settings in one place."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import TopicAlreadyExistsError

from processor.settings import Settings

log = logging.getLogger(__name__)

# (partition, key, value, headers) of one record for ``send_batched``
Keyed = tuple[int, bytes | None, bytes, list[tuple[str, bytes]]]


def producer(settings: Settings) -> AIOKafkaProducer:
    """Idempotent producer with acks from all replicas: a record acked is a record kept."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        linger_ms=2,
        max_batch_size=256 * 1024,
    )


def consumer(
    settings: Settings, group: str, topics: list[str], listener: ConsumerRebalanceListener | None
) -> AIOKafkaConsumer:
    """A group consumer that never commits on its own: callers commit after effects are durable.

    Partitions are assigned by ranges, so a member given partition p of one topic is given
    partition p of every co-partitioned topic it subscribes to (``events`` and
    ``events.by-key``): the single-writer rule of the event worker rests on that.
    """
    kafka_consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        # getmany already bounds the wait; a long broker-side wait only adds latency
        fetch_max_wait_ms=settings.batch_timeout_ms,
        partition_assignment_strategy=(RangePartitionAssignor,),
        heartbeat_interval_ms=max(1000, settings.kafka_session_timeout_ms // 4),
    )
    if listener is not None:
        kafka_consumer.subscribe(topics, listener=listener)
    else:
        kafka_consumer.subscribe(topics)
    return kafka_consumer


def project_topics(settings: Settings) -> dict[str, int]:
    """Every topic Signalbox uses, with its partition count."""
    return {
        settings.events_topic: settings.partitions,
        settings.keyed_topic: settings.partitions,
        settings.events_dlq_topic: 1,
        settings.transitions_topic: settings.partitions,
        settings.interventions_topic: settings.partitions,
        settings.deliveries_dlq_topic: 1,
    }


async def ensure_topics(settings: Settings, topics: dict[str, int] | None = None) -> None:
    """Create missing topics with explicit partition counts (the broker's auto-creation is off)."""
    wanted = topics if topics is not None else project_topics(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, num_partitions=parts, replication_factor=1)
            for name, parts in wanted.items()
            if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # a concurrent starter won
                await admin.create_topics(missing)
            log.info("created topics %s", [t.name for t in missing])
    finally:
        await admin.close()


async def send_batched(
    producer: AIOKafkaProducer, topic: str, records: Iterable[Keyed]
) -> list[asyncio.Future[object]]:
    """Queue records whose partitions are known as whole batches, in order per partition;
    returns the futures of their acks. ``producer.send`` makes a future and goes through the
    partitioner and the accumulator's coroutine for each record: per record, this costs an
    append to the batch being built."""
    by_partition: dict[int, list[Keyed]] = {}
    for record in records:
        by_partition.setdefault(record[0], []).append(record)
    futures = []
    for partition, items in by_partition.items():
        batch = producer.create_batch()
        for _, key, value, headers in items:
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is not None:
                continue
            if batch.record_count():  # full: send it, start the next one with this record
                batch.close()
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is not None:
                    continue
            # larger than a whole batch: on its own (the broker's size limit applies)
            futures.append(await producer.send(topic, value, key=key, partition=partition,
                                               headers=headers))
        if batch.record_count():
            batch.close()
            futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures
