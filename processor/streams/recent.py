"""Read a bounded window of recent records from the events topic (for previews, §1.10).

No consumer group, no commits: partitions are assigned by hand, each positioned with
``offsets_for_times`` at the start of the window and read up to its end offset as of the call
(records produced meanwhile are not waited for). At most ``max_records`` in all, split over
the partitions; when a partition holds more than its share in the window, its newest records
are kept. The whole read is bounded by ``timeout_s``: what arrived by then is returned.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from processor.domain.records import RawRecord
from processor.settings import Settings
from processor.streams.routing import STREAM_HEADER, TIMESTAMP_FIELD_HEADER, header

MAX_RECORDS = 10_000
TIMEOUT_S = 10.0


def _raw(record: ConsumerRecord[bytes, bytes]) -> RawRecord:
    return RawRecord(
        value=record.value or b"",
        timestamp_ms=record.timestamp or 0,
        stream=header(record, STREAM_HEADER),
        timestamp_field=header(record, TIMESTAMP_FIELD_HEADER),
    )


async def _partitions(consumer: AIOKafkaConsumer, topic: str, deadline: float) -> set[int]:
    """The topic's partition ids. A consumer without subscription tracks no topic's metadata
    (``topics()`` fetches it without keeping it, so ``partitions_for_topic`` stays None): ask
    its client to track the topic and wait for it, as aiokafka's producer does."""
    try:
        found = await asyncio.wait_for(
            consumer._client._wait_on_metadata(topic), max(0.1, deadline - time.monotonic())
        )
    except KafkaError:  # UnknownTopicOrPartitionError after its own metadata timeout
        return set()
    return set(found or ())


async def recent_records(
    settings: Settings,
    *,
    since_ms: int,
    topic: str | None = None,
    max_records: int = MAX_RECORDS,
    timeout_s: float = TIMEOUT_S,
) -> list[RawRecord]:
    """Records of ``topic`` (default: the events topic) produced at or after ``since_ms``."""
    topic = topic or settings.events_topic
    deadline = time.monotonic() + timeout_s
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="latest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        request_timeout_ms=max(1000, int(timeout_s * 1000)),
    )
    await asyncio.wait_for(consumer.start(), timeout_s)
    try:
        partitions = sorted(await _partitions(consumer, topic, deadline))
        if not partitions:
            return []
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        starts = await consumer.offsets_for_times({tp: since_ms for tp in tps})
        ends = await consumer.end_offsets(tps)
        share = max(1, max_records // len(tps))
        remaining: dict[TopicPartition, int] = {}
        for tp in tps:
            found = starts.get(tp)
            if found is None or found.offset >= ends[tp]:
                continue  # nothing in the window
            start = max(found.offset, ends[tp] - share)
            consumer.seek(tp, start)
            remaining[tp] = ends[tp]
        records: list[RawRecord] = []
        while remaining and len(records) < max_records:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            batch = await consumer.getmany(*remaining, timeout_ms=int(min(left, 0.5) * 1000))
            for tp, rs in batch.items():
                end = remaining.get(tp)
                if end is None:
                    continue
                records.extend(_raw(r) for r in rs if r.offset < end)
                if rs and rs[-1].offset + 1 >= end:
                    remaining.pop(tp, None)
            for tp in list(remaining):  # a transaction marker can end a partition silently
                if await consumer.position(tp) >= remaining[tp]:
                    remaining.pop(tp)
        return records[:max_records]
    finally:
        await consumer.stop()
