"""The contract every sink (webhook, Kinesis, Kafka) keeps.

Lifecycle: construct (assigns only, no I/O) -> ``await start()`` (connections) -> any number of
``add`` / ``flush`` rounds -> ``await close()``. ``add`` and ``flush`` are never called after
``close``; a sink used outside ``start``/``close`` raises ``DeliveryFailed``.

``flush`` delivers everything added since the last flush and returns exactly one
``DeliveryResult`` per record: ``delivered``, or ``dead`` with the reason (non-retriable error,
or the retry budget spent) so the caller can dead-letter it. A sink built with
``park_retriable=True`` keeps its in-place budget short and answers ``retry`` instead of
``dead`` for a record that failed only retriably: the caller parks it and tries again later.
In that mode a record's later records of the same ordering key also come back as ``retry``
(not attempted after it), so that parking them in order keeps the entity's order. Records sharing a
``Delivery.ordering_key`` (one entity of one subscription) reach the target in the order added;
different keys may be delivered concurrently. ``flush`` raises ``SinkBackpressure`` when the
target asks for a pause longer than the sink waits in place (the unsettled records stay added),
and ``DeliveryFailed`` when the sink as a whole cannot work.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Literal

from processor.domain.payloads import Delivery

Outcome = Literal["delivered", "dead", "retry"]


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    delivery: Delivery
    outcome: Outcome
    attempts: int
    reason: str | None = None
    retry_after: float | None = None  # on ``retry``: what the target asked to wait, if anything

    @property
    def delivery_id(self) -> str:
        return self.delivery.id

    @property
    def delivered(self) -> bool:
        return self.outcome == "delivered"


class Sink(abc.ABC):
    @abc.abstractmethod
    async def start(self) -> None:
        """Open connections. Called once, before the first ``add``."""

    @abc.abstractmethod
    async def add(self, record: Delivery) -> None:
        """Queue ``record`` for the next ``flush``; does no network I/O."""

    @abc.abstractmethod
    async def flush(self) -> list[DeliveryResult]:
        """Deliver what was added; one result per settled record (see module doc)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections. Idempotent; nothing is called on the sink afterwards."""
