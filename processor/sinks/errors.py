"""Errors raised by sinks; they extend ``processor.errors.DeliveryError``.

    DeliveryError (processor.errors)       ``reason``, ``retriable``
    ├── DeliveryFailed                     the sink cannot deliver (not started, closed, broken
    │   │                                  configuration); ``retriable`` says whether to retry
    │   └── TargetRefused                  a webhook URL that policy forbids (scheme, private or
    │                                      loopback address...); never retriable
    └── SinkBackpressure                   the target asked us to slow down for longer than the
                                           sink waits in place; retry after ``retry_after`` s

Per-record outcomes (delivered, dead with a reason) are *results*, not exceptions: one bad
record never fails the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from processor.errors import DeliveryError

if TYPE_CHECKING:
    from processor.sinks.base import DeliveryResult


class DeliveryFailed(DeliveryError):
    def __init__(self, reason: str, *, retriable: bool) -> None:
        super().__init__(reason, retriable=retriable)


class TargetRefused(DeliveryFailed):
    def __init__(self, reason: str) -> None:
        super().__init__(reason, retriable=False)


class SinkBackpressure(DeliveryError):
    """Raised by ``flush``: wait ``retry_after`` seconds, then ``flush`` again.

    ``results`` holds the outcomes of records settled before the pause; every other record is
    still added, in order, and is delivered by the next ``flush``.
    """

    def __init__(self, retry_after: float, results: Sequence[DeliveryResult] = ()) -> None:
        super().__init__(f"target asked to retry after {retry_after:.1f}s", retriable=True)
        self.retry_after = retry_after
        self.results = list(results)
