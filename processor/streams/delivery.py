"""The delivery worker: Kafka ``transitions`` -> every matching subscription's channel.

Per batch: parse the transition records (a bad one is dead-lettered with its reason), match
them against the published subscriptions, hand each (subscription, transition) to the sink of
the subscription's channel, flush every sink concurrently, dead-letter what a sink gave up on
(with the reason), and only then commit the offsets. A crash before the commit re-delivers the
batch with the same delivery ids (receivers de-duplicate on ``webhook-id``).

Sinks keep records of one entity of one subscription in order and deliver different ones
concurrently, so one slow endpoint does not serialise the others within a batch.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord
from redis.asyncio import Redis

from processor.clock import Clock, wall_ms
from processor.domain.payloads import Delivery
from processor.domain.subscriptions import Subscription, matches
from processor.domain.transitions import Transition
from processor.settings import Settings
from processor.sinks.base import DeliveryResult, Sink
from processor.sinks.errors import SinkBackpressure
from processor.sinks.kafka import KafkaSink
from processor.sinks.kinesis import KinesisSink
from processor.sinks.webhook import WebhookSink
from processor.state.registry import Registry
from processor.streams import kafka

log = logging.getLogger(__name__)


class DeliveryWorker:
    def __init__(self, settings: Settings, redis: Redis, clock: Clock = wall_ms) -> None:
        self.settings = settings
        self.registry = Registry(redis)
        self.clock = clock
        self.subscriptions: tuple[Subscription, ...] = ()
        self.sinks: dict[str, Sink] = {
            "webhook": WebhookSink(
                timeout_s=settings.webhook_timeout_s,
                max_attempts=settings.webhook_max_attempts,
                allow_private=settings.webhook_allow_private,
                allow_loopback=settings.webhook_allow_loopback,
            ),
            "kafka": KafkaSink(bootstrap_servers=settings.kafka_bootstrap_servers),
            "kinesis": KinesisSink(endpoint_url=settings.kinesis_endpoint_url),
        }
        self.stats = {"delivered": 0, "dead": 0}
        self.worker_id = f"delivery-{socket.gethostname()}-{os.getpid()}"
        self._version = -1
        self._next_registry_check = 0
        self._producer: AIOKafkaProducer | None = None

    async def run(self, stop: asyncio.Event) -> None:
        await kafka.ensure_topics(self.settings)
        self._producer = kafka.producer(self.settings)
        consumer: AIOKafkaConsumer = kafka.consumer(
            self.settings, self.settings.delivery_group, [self.settings.transitions_topic], None
        )
        await self._producer.start()
        for sink in self.sinks.values():
            await sink.start()
        await consumer.start()
        try:
            while not stop.is_set():
                await self._refresh_subscriptions()
                batch = await consumer.getmany(timeout_ms=self.settings.batch_timeout_ms,
                                               max_records=self.settings.batch_max_records)
                if batch:
                    await self.process(batch)
                    await consumer.commit({tp: rs[-1].offset + 1 for tp, rs in batch.items()})
        finally:
            await consumer.stop()
            for sink in self.sinks.values():
                await sink.close()
            await self._producer.stop()

    async def _refresh_subscriptions(self) -> None:
        now = self.clock()
        if now < self._next_registry_check:
            return
        self._next_registry_check = now + self.settings.registry_poll_ms
        version = await self.registry.version()
        if version != self._version:
            loaded = []
            for sub_id, doc in (await self.registry.all("subscriptions")).items():
                try:
                    loaded.append(Subscription.model_validate(doc))
                except ValueError:
                    log.exception("subscription %s is invalid in the registry; skipped", sub_id)
            self.subscriptions = tuple(loaded)
            self._version = version
            log.info("registry version %d: %d subscriptions", version, len(loaded))
        await self.registry.report_loaded(self.worker_id, self._version, now)

    async def process(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        """Deliver or dead-letter every record of the batch; returns when all are settled."""
        dead: list[tuple[bytes, dict[str, str]]] = []
        for records in batch.values():
            for record in records:
                try:
                    transition = Transition.from_json(record.value or b"")
                except ValueError as exc:
                    dead.append((record.value or b"", {"reason": str(exc)}))
                    continue
                for subscription in self.subscriptions:
                    if matches(subscription, transition):
                        await self.sinks[subscription.channel].add(Delivery(subscription, transition))
        results = await asyncio.gather(*(_flush(sink) for sink in self.sinks.values()))
        for result in (r for rs in results for r in rs):
            if result.delivered:
                self.stats["delivered"] += 1
            else:
                self.stats["dead"] += 1
                dead.append(_dead_letter(result))
        await self._dead_letter(dead)

    async def _dead_letter(self, dead: list[tuple[bytes, dict[str, str]]]) -> None:
        assert self._producer is not None
        futures = [
            await self._producer.send(self.settings.deliveries_dlq_topic, value,
                                      headers=[(k, v.encode()) for k, v in headers.items()])
            for value, headers in dead
        ]
        if futures:
            await asyncio.gather(*futures)
            log.warning("dead-lettered %d deliveries; first: %s", len(dead), dead[0][1]["reason"])


async def _flush(sink: Sink) -> list[DeliveryResult]:
    """Flush until every added record is settled, pausing as long as the target asks."""
    settled: list[DeliveryResult] = []
    while True:
        try:
            return settled + await sink.flush()
        except SinkBackpressure as pause:
            settled += pause.results
            await asyncio.sleep(pause.retry_after)


def _dead_letter(result: DeliveryResult) -> tuple[bytes, dict[str, str]]:
    delivery = result.delivery
    value = orjson.dumps({
        "delivery_id": delivery.id,
        "subscription_id": delivery.subscription.id,
        "channel": delivery.subscription.channel,
        "attempts": result.attempts,
        "reason": result.reason,
        "transition": orjson.loads(delivery.transition.to_json()),
    })
    return value, {"reason": result.reason or "unknown", "subscription_id": delivery.subscription.id}
