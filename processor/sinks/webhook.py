"""``WebhookSink``: POST Lytics payloads to subscribers' URLs, signed, retried, in order.

Each record is one POST of ``payload_bytes(delivery)`` to the subscription's ``webhook_url``
with its custom ``headers``, ``Content-Type: application/json`` and the Standard Webhooks
headers: ``webhook-id`` (the stable delivery id, identical on every retry), ``webhook-timestamp``
(time of *this* attempt, so receivers' replay window accepts late retries) and
``webhook-signature`` (``standardwebhooks`` HMAC-SHA256 with the subscription's secret; omitted
when it has none).

Retries: timeouts, connection errors and retriable statuses (``is_retriable_status``) are tried
again after ``backoff_delay`` (full jitter), or exactly after the ``Retry-After`` the target sent,
until ``max_attempts`` or ``max_elapsed_s`` is spent -> ``dead``. A non-retriable status (most
4xx, any 3xx: redirects are not followed, so the URL guard cannot be bypassed) is ``dead`` at
once. A ``Retry-After`` above ``max_retry_after_s`` pauses the whole sink: ``flush`` raises
``SinkBackpressure`` and keeps the unsettled records.

Order: records of one ``ordering_key`` go one after the other (the next starts when the
previous is settled); up to ``concurrency`` keys are in flight at once.

With ``park_retriable=True`` (the delivery lanes) a record whose retriable failures spent the
in-place budget, or whose ``Retry-After`` is too long to wait in place, is settled as ``retry``
(never raises ``SinkBackpressure``), and the rest of its key is returned as ``retry`` unsent.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from standardwebhooks import Webhook

from processor.domain.backoff import backoff_delay, is_retriable_status, retry_after_seconds
from processor.domain.payloads import Delivery, payload_bytes
from processor.sinks.base import DeliveryResult, Sink
from processor.sinks.errors import DeliveryFailed, SinkBackpressure, TargetRefused
from processor.sinks.urlguard import check_target_async

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
_REASON_BODY_CHARS = 200  # enough of an error body to explain a 4xx, not enough to flood a DLQ


@dataclass(frozen=True, slots=True)
class _Attempt:
    ok: bool
    retriable: bool = False
    reason: str = ""
    retry_after: float | None = None


class _Deferred(Exception):
    def __init__(self, retry_after: float, reason: str) -> None:
        self.retry_after = retry_after
        self.reason = reason


class WebhookSink(Sink):
    """Delivers ``Delivery`` records over HTTP; see the module docstring for the guarantees.

    ``client`` may be injected to share one connection pool between sinks (the sink then never
    closes it). ``sleep``, ``monotonic`` (retry budget) and ``wall`` (``webhook-timestamp``) are
    injectable so tests can drive time; per-request timeouts always use the real loop clock.
    """

    def __init__(self, *, timeout_s: float = 10.0, max_attempts: int = 8,
                 max_elapsed_s: float = 300.0, backoff_base_s: float = 0.5,
                 backoff_cap_s: float = 60.0, max_retry_after_s: float = 120.0,
                 concurrency: int = 16, allow_private: bool = False,
                 allow_loopback: bool = False, client: httpx.AsyncClient | None = None,
                 park_retriable: bool = False,
                 rng: random.Random | None = None, sleep: Sleep = asyncio.sleep,
                 monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        if max_attempts < 1 or concurrency < 1 or timeout_s <= 0:
            raise ValueError("max_attempts and concurrency must be >= 1, timeout_s > 0")
        self._timeout_s = timeout_s
        self._max_attempts = max_attempts
        self._max_elapsed_s = max_elapsed_s
        self._backoff = (backoff_base_s, backoff_cap_s)
        self._max_retry_after_s = max_retry_after_s
        self._concurrency = concurrency
        self._allow = (allow_private, allow_loopback)
        self._client = client
        self._owns_client = client is None
        self._park = park_retriable
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._monotonic = monotonic
        self._wall = wall
        self._pending: dict[tuple[str, str], list[tuple[int, Delivery]]] = {}
        self._added = 0  # sequence numbers: results come back in the order records were added
        self._started = False
        self._closed = False

    async def start(self) -> None:
        if self._client is None:
            limits = httpx.Limits(max_connections=self._concurrency * 2,
                                  max_keepalive_connections=self._concurrency)
            self._client = httpx.AsyncClient(limits=limits, follow_redirects=False,
                                             timeout=httpx.Timeout(self._timeout_s))
        self._started = True

    async def close(self) -> None:
        self._closed = True
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def add(self, record: Delivery) -> None:
        self._check_open()
        if record.subscription.webhook_url is None:
            raise DeliveryFailed(f"subscription {record.subscription.id} has no webhook_url",
                                 retriable=False)
        self._added += 1
        self._pending.setdefault(record.ordering_key, []).append((self._added, record))

    async def flush(self) -> list[DeliveryResult]:
        self._check_open()
        results: list[tuple[int, DeliveryResult]] = []
        pause: list[float] = []
        gate = asyncio.Semaphore(self._concurrency)
        guard_cache: dict[str, asyncio.Task[None]] = {}

        async def run_key(key: tuple[str, str]) -> None:
            async with gate:
                queue = self._pending[key]
                while queue and not pause:
                    seq, record = queue[0]
                    try:
                        result = await self._deliver(record, guard_cache)
                    except _Deferred as deferred:
                        if not self._park:
                            pause.append(deferred.retry_after)
                            return
                        result = DeliveryResult(record, "retry", 1, deferred.reason,
                                                deferred.retry_after)
                    results.append((seq, result))
                    queue.pop(0)
                    if result.outcome == "retry":
                        results.extend((s, _behind(r, result)) for s, r in queue)
                        queue.clear()

        await asyncio.gather(*(run_key(key) for key in list(self._pending)))
        self._pending = {k: q for k, q in self._pending.items() if q}
        settled = [result for _, result in sorted(results, key=lambda pair: pair[0])]
        if pause:
            raise SinkBackpressure(max(pause), settled)
        return settled

    def _check_open(self) -> None:
        if not self._started or self._closed or self._client is None:
            raise DeliveryFailed("webhook sink used outside start()/close()", retriable=False)

    async def _deliver(self, record: Delivery,
                       guard_cache: dict[str, asyncio.Task[None]]) -> DeliveryResult:
        """Try ``record`` until delivered, dead, or deferred (raises ``_Deferred``)."""
        body = payload_bytes(record)
        deadline = self._monotonic() + self._max_elapsed_s
        attempt = 0
        while True:
            attempt += 1
            outcome = await self._attempt(record, body, guard_cache)
            if outcome.ok:
                return DeliveryResult(record, "delivered", attempt)
            if not outcome.retriable:
                return self._dead(record, attempt, outcome.reason)
            if attempt >= self._max_attempts:
                return self._give_up(record, attempt, outcome,
                                     f"gave up after {attempt} attempts: {outcome.reason}")
            delay = self._next_delay(attempt, outcome)
            if self._monotonic() + delay > deadline:
                return self._give_up(record, attempt, outcome,
                                     f"retry budget of {self._max_elapsed_s:g}s spent: "
                                     f"{outcome.reason}")
            log.info("webhook retry: subscription=%s delivery=%s attempt=%d in=%.2fs reason=%s",
                     record.subscription.id, record.id, attempt, delay, outcome.reason)
            await self._sleep(delay)

    def _next_delay(self, attempt: int, outcome: _Attempt) -> float:
        retry_after = outcome.retry_after
        if retry_after is None:
            base, cap = self._backoff
            return backoff_delay(attempt, base=base, cap=cap, rng=self._rng)
        if retry_after > self._max_retry_after_s:
            raise _Deferred(retry_after, outcome.reason)
        return retry_after

    def _give_up(self, record: Delivery, attempts: int, outcome: _Attempt,
                 reason: str) -> DeliveryResult:
        """The in-place budget is spent on retriable failures: ``retry`` when parking."""
        if self._park:
            return DeliveryResult(record, "retry", attempts, outcome.reason, outcome.retry_after)
        return self._dead(record, attempts, reason)

    def _dead(self, record: Delivery, attempts: int, reason: str) -> DeliveryResult:
        log.warning("webhook dead: subscription=%s delivery=%s attempts=%d reason=%s",
                    record.subscription.id, record.id, attempts, reason)
        return DeliveryResult(record, "dead", attempts, reason)

    async def _attempt(self, record: Delivery, body: bytes,
                       guard_cache: dict[str, asyncio.Task[None]]) -> _Attempt:
        url = record.subscription.webhook_url
        assert url is not None and self._client is not None  # checked in add / _check_open
        try:
            await self._guard(url, guard_cache)
        except DeliveryFailed as exc:
            return _Attempt(ok=False, retriable=exc.retriable, reason=exc.reason)
        headers = self._headers(record, body)
        try:
            async with asyncio.timeout(self._timeout_s):
                response = await self._client.post(url, content=body, headers=headers)
        except (TimeoutError, httpx.TimeoutException):
            return _Attempt(ok=False, retriable=True,
                            reason=f"no answer within {self._timeout_s:g}s")
        except httpx.TransportError as exc:
            return _Attempt(ok=False, retriable=True,
                            reason=f"connection failed: {type(exc).__name__}")
        return self._judge(response)

    async def _guard(self, url: str, cache: dict[str, asyncio.Task[None]]) -> None:
        # One DNS check per URL per flush; concurrent keys of one URL share the lookup. A
        # lookup that failed retriably (DNS hiccup) is redone on the next attempt.
        task = cache.get(url)
        if task is None or _failed_retriably(task):
            allow_private, allow_loopback = self._allow
            task = asyncio.ensure_future(check_target_async(
                url, allow_private=allow_private, allow_loopback=allow_loopback))
            cache[url] = task
        await asyncio.shield(task)

    def _headers(self, record: Delivery, body: bytes) -> dict[str, str]:
        sub = record.subscription
        now = self._wall()
        headers = dict(sub.headers)
        headers["Content-Type"] = "application/json"
        headers["webhook-id"] = record.id
        headers["webhook-timestamp"] = str(int(now))
        if sub.signing_secret is not None:
            moment = datetime.fromtimestamp(int(now), tz=UTC)
            headers["webhook-signature"] = Webhook(sub.signing_secret).sign(
                record.id, moment, body.decode("utf-8"))
        return headers

    def _judge(self, response: httpx.Response) -> _Attempt:
        status = response.status_code
        if 200 <= status <= 299:
            return _Attempt(ok=True)
        retry_after = None
        if status in (429, 503):
            retry_after = retry_after_seconds(response.headers.get("retry-after"), self._wall())
        excerpt = response.text[:_REASON_BODY_CHARS].strip()
        reason = f"HTTP {status}" + (f": {excerpt}" if excerpt else "")
        if 300 <= status <= 399:
            reason += " (redirects are not followed)"
        return _Attempt(ok=False, retriable=is_retriable_status(status), reason=reason,
                        retry_after=retry_after)


def _behind(record: Delivery, blocker: DeliveryResult) -> DeliveryResult:
    """``retry`` for a record left unsent because an earlier one of its entity is parked."""
    return DeliveryResult(record, "retry", 0, f"behind {blocker.delivery_id}: {blocker.reason}")


def _failed_retriably(task: asyncio.Task[None]) -> bool:
    if not task.done() or task.cancelled():
        return task.cancelled()
    error = task.exception()
    return error is not None and not isinstance(error, TargetRefused)
