"""kafka.send_batched against a real broker: every record once, in order per partition, across
full batches and a record larger than a batch."""

from __future__ import annotations

import asyncio

import pytest

from processor.settings import Settings
from processor.streams import kafka
from tests.support.kafka_io import read_topic

pytestmark = pytest.mark.integration


def test_records_arrive_once_in_order_per_partition_with_their_keys_and_headers(
    settings: Settings,
) -> None:
    topic = settings.transitions_topic
    big = b"x" * (300 * 1024)  # more than the producer's 256 KiB batch
    records: list[kafka.Keyed] = []
    for n in range(3000):
        value = big if n == 1500 else b"%d:" % n + b"y" * 200
        records.append((n % 2, b"k%d" % n, value, [("n", b"%d" % n)]))

    async def scenario() -> None:
        await kafka.ensure_topics(settings)
        producer = kafka.producer(settings)
        await producer.start()
        try:
            futures = await kafka.send_batched(producer, topic, records)
            assert len(futures) > 2  # several batches per partition
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        got = await read_topic(settings, topic, at_least=len(records), settle=1.0)
        assert len(got) == len(records)
        for partition in (0, 1):
            sent = [r for r in records if r[0] == partition]
            read = [r for r in got if r.partition == partition]
            assert [(r.key, r.value, list(r.headers)) for r in read] == \
                [(k, v, h) for _, k, v, h in sent]

    asyncio.run(scenario())
