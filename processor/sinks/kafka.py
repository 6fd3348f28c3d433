"""``KafkaSink``: transitions to a subscription's Kafka topic, keyed by entity, acks=all.

Each record is ``kafka_record(...)``: the transition JSON plus ``subscription_id`` and
``delivery_id``, key ``"<key>:<id>"`` so one entity stays on one partition, headers
``delivery-id`` and ``event``. The producer is idempotent with ``acks=all``: an acknowledged
record is on every in-sync replica, and broker-side retries neither duplicate nor reorder.

Topics are *not* created here (that is an operator's or the API's decision): a missing topic is
a retriable failure until the retry budget is spent, then the record is ``dead``. Errors the
broker marks non-retriable (record too large, authorisation) are ``dead`` at once.

Order: ``flush`` sends in rounds. In a round every pending record is sent in the order added; if
a record of an ordering key fails, that record and every later record of the same key are sent
again in the next round, in order. Later records that had already been written are thus
written again (at-least-once; receivers de-duplicate on ``delivery-id``), but a reader never
sees a record only before one that preceded it.

With ``park_retriable=True`` a record still failing retriably when the budget is spent (and the
records of its key behind it) settles as ``retry`` instead of ``dead``: the caller parks it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError, UnknownTopicOrPartitionError

from processor.domain.backoff import backoff_delay
from processor.domain.payloads import Delivery, KafkaRecord, kafka_record
from processor.sinks.base import DeliveryResult, Sink
from processor.sinks.errors import DeliveryFailed

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


@dataclass(slots=True)
class _Pending:
    delivery: Delivery
    record: KafkaRecord
    attempts: int = 0
    failure: str | None = None  # None: acknowledged in the last round
    retriable: bool = True


class KafkaSink(Sink):
    """Produces ``Delivery`` records of kafka-channel subscriptions; see the module docstring.

    ``request_timeout_ms`` also bounds how long one send waits for a topic's metadata, i.e. how
    long a missing topic costs per round.
    """

    def __init__(self, *, bootstrap_servers: str, client_id: str = "signalbox-delivery",
                 request_timeout_ms: int = 10_000, max_attempts: int = 5,
                 max_elapsed_s: float = 60.0, backoff_base_s: float = 0.2,
                 backoff_cap_s: float = 5.0, rng: random.Random | None = None,
                 sleep: Sleep = asyncio.sleep,
                 monotonic: Callable[[], float] = time.monotonic,
                 park_retriable: bool = False) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self._bootstrap = bootstrap_servers
        self._client_id = client_id
        self._request_timeout_ms = request_timeout_ms
        self._max_attempts = max_attempts
        self._max_elapsed_s = max_elapsed_s
        self._backoff = (backoff_base_s, backoff_cap_s)
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._monotonic = monotonic
        self._producer: AIOKafkaProducer | None = None
        self._pending: list[_Pending] = []
        self._closed = False
        self._park = park_retriable

    async def start(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap, client_id=self._client_id, acks="all",
            enable_idempotence=True, request_timeout_ms=self._request_timeout_ms, linger_ms=5,
        )
        await producer.start()
        self._producer = producer

    async def close(self) -> None:
        self._closed = True
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def add(self, record: Delivery) -> None:
        self._check_open()
        try:
            built = kafka_record(record.subscription, record.transition)
        except ValueError as exc:
            raise DeliveryFailed(str(exc), retriable=False) from None
        self._pending.append(_Pending(record, built))

    async def flush(self) -> list[DeliveryResult]:
        self._check_open()
        pending, self._pending = self._pending, []
        settled: dict[int, DeliveryResult] = {}
        deadline = self._monotonic() + self._max_elapsed_s
        order = {id(p): i for i, p in enumerate(pending)}
        round_no = 0
        while pending:
            round_no += 1
            await self._send_round(pending)
            pending = self._settle(pending, settled, order, deadline)
            if pending:
                base, cap = self._backoff
                await self._sleep(backoff_delay(round_no, base=base, cap=cap, rng=self._rng))
        return [settled[i] for i in sorted(settled)]

    def _check_open(self) -> None:
        if self._producer is None or self._closed:
            raise DeliveryFailed("kafka sink used outside start()/close()", retriable=False)

    async def _send_round(self, pending: list[_Pending]) -> None:
        """Send every pending record once; note each one's failure (``None`` when acked)."""
        assert self._producer is not None
        missing_topics: dict[str, str] = {}
        futures: list[tuple[_Pending, asyncio.Future[object]]] = []
        for item in pending:
            item.attempts += 1
            item.failure, item.retriable = missing_topics.get(item.record.topic), True
            if item.failure is not None:
                continue  # do not wait the metadata timeout again for every record
            try:
                future = await self._producer.send(
                    item.record.topic, item.record.value, key=item.record.key,
                    headers=list(item.record.headers))
            except KafkaError as exc:
                item.failure, item.retriable = _describe(exc)
                if isinstance(exc, UnknownTopicOrPartitionError):
                    missing_topics[item.record.topic] = item.failure
                continue
            futures.append((item, future))
        outcomes = await asyncio.gather(*(f for _, f in futures), return_exceptions=True)
        for (item, _), outcome in zip(futures, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                item.failure, item.retriable = _describe(outcome)

    def _settle(self, pending: list[_Pending], settled: dict[int, DeliveryResult],
                order: dict[int, int], deadline: float) -> list[_Pending]:
        """Record outcomes; return what must go again (in order)."""
        again: list[_Pending] = []
        broken_keys: set[tuple[str, str]] = set()
        out_of_time = self._monotonic() >= deadline
        for item in pending:
            key = item.delivery.ordering_key
            if item.failure is None and key not in broken_keys:
                settled[order[id(item)]] = DeliveryResult(item.delivery, "delivered", item.attempts)
                continue
            reason = item.failure or "re-sent after an earlier record of its entity failed"
            if item.failure is not None and not item.retriable:
                settled[order[id(item)]] = self._dead(item, reason)
            elif (item.attempts >= self._max_attempts or out_of_time) and self._park:
                settled[order[id(item)]] = DeliveryResult(item.delivery, "retry", item.attempts,
                                                          reason)
            elif item.attempts >= self._max_attempts or out_of_time:
                settled[order[id(item)]] = self._dead(
                    item, f"gave up after {item.attempts} attempts: {reason}")
            else:
                again.append(item)
            broken_keys.add(key)
        return again

    def _dead(self, item: _Pending, reason: str) -> DeliveryResult:
        log.warning("kafka dead: subscription=%s delivery=%s topic=%s reason=%s",
                    item.delivery.subscription.id, item.delivery.id, item.record.topic, reason)
        return DeliveryResult(item.delivery, "dead", item.attempts, reason)


def _describe(exc: BaseException) -> tuple[str, bool]:
    """A failure's reason and whether retrying can help (the broker's own verdict)."""
    if isinstance(exc, UnknownTopicOrPartitionError):
        return "topic does not exist (topics are not created by the sink)", True
    text = f"{type(exc).__name__}: {exc}".rstrip(": ")
    if isinstance(exc, KafkaTimeoutError):  # aiokafka flags it final; a slow broker recovers
        return text, True
    return text, bool(getattr(exc, "retriable", False)) or not isinstance(exc, KafkaError)
