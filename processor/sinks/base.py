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

A sink may also deliver single records without a task of the caller's (``send``): the
webhook sink does, so a lane sending one record per request spends no task, future or
coroutine per record. Sinks without it answer ``False`` and the caller uses ``add`` + ``flush``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from processor.domain.payloads import Delivery

Outcome = Literal["delivered", "dead", "retry"]


@dataclass(slots=True)  # not frozen: one per record, and frozen fields cost a setattr call each
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

    def send(self, record: Delivery,
             done: Callable[[DeliveryResult | BaseException], None]) -> bool:
        """Deliver one record by itself if this sink can: then ``done`` is called once with
        its result (as ``flush`` would give it, in park mode) or with the exception that broke
        the delivery, never before ``send`` returns, and not at all once the sink is closed.
        ``False``: this sink cannot (the default); use ``add`` + ``flush``."""
        return False
