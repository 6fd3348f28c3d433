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

Cost per request (one POST per transition is the Lytics contract, so this bounds a lane): the
requests go through ``processor.sinks.http1`` (keep-alive connections, shared by every sink
given the same ``client``); the subscription's static header lines are encoded once per
subscription object, the signature is HMAC-SHA256 from the key's precomputed inner and outer
SHA-256 states (two hash copies per request instead of a keyed set-up), and the target's address
check (``urlguard``) is redone once a minute, not per request. ``send`` (the lanes' live path)
writes a record's first attempt at once on an idle pooled connection and judges the answer in
that connection's callback: no task, future or coroutine per record unless it must be retried.

With ``park_retriable=True`` (the delivery lanes) a record whose retriable failures spent the
in-place budget, or whose ``Retry-After`` is too long to wait in place, is settled as ``retry``
(never raises ``SinkBackpressure``), and the rest of its key is returned as ``retry`` unsent.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from processor.domain.backoff import backoff_delay, is_retriable_status, retry_after_seconds
from processor.domain.payloads import Delivery, payload_bytes
from processor.domain.subscriptions import Subscription
from processor.sinks.base import DeliveryResult, Sink
from processor.sinks.errors import DeliveryFailed, SinkBackpressure, TargetRefused
from processor.sinks.http1 import (
    Http1Client,
    HttpError,
    PeerRefused,
    Response,
    Target,
    encode_headers,
    target,
)
from processor.sinks.urlguard import check_target_async, peer_refusal

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
_REASON_BODY_CHARS = 200  # enough of an error body to explain a 4xx, not enough to flood a DLQ
# A target's address is checked (urlguard) on first use and again after this long; pooled
# connections are reused meanwhile, so the check is not paid per request.
_GUARD_TTL_S = 60.0
_SECRET_PREFIX = "whsec_"
_SHA256_BLOCK = 64
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))
Done = Callable[[DeliveryResult | BaseException], None]


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
    closes it); ``concurrency`` bounds the keys one ``flush`` sends at once. ``sleep``, ``monotonic`` (retry budget) and ``wall`` (``webhook-timestamp``) are
    injectable so tests can drive time; per-request timeouts always use the real loop clock.
    """

    def __init__(self, *, timeout_s: float = 10.0, max_attempts: int = 8,
                 max_elapsed_s: float = 300.0, backoff_base_s: float = 0.5,
                 backoff_cap_s: float = 60.0, max_retry_after_s: float = 120.0,
                 concurrency: int = 16, allow_private: bool = False,
                 allow_loopback: bool = False, client: Http1Client | None = None,
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
        # subscription id -> (that subscription object, target, constant header lines, signer)
        self._static: dict[str, tuple[Subscription, Target, bytes, _Signer | None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # ``send``'s retries
        self._guards: dict[str, tuple[float, asyncio.Task[None]]] = {}  # url -> (checked, check)
        self._passed: dict[str, float] = {}  # url -> until when its last check holds (loop time)
        self._added = 0  # sequence numbers: results come back in the order records were added
        self._started = False
        self._closed = False

    async def start(self) -> None:
        if self._client is None:
            allow_private, allow_loopback = self._allow
            self._client = Http1Client(
                max_idle_per_origin=self._concurrency * 2,
                check_peer=functools.partial(peer_refusal, allow_private=allow_private,
                                             allow_loopback=allow_loopback))
        self._started = True

    async def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
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

    def send(self, record: Delivery, done: Done) -> bool:
        """Deliver one record by itself (the lanes' live path); ``done`` gets its result once,
        never before this returns (not at all once the sink is closed), or the exception that
        broke the delivery. Same attempts and outcomes as ``add`` + ``flush`` in park mode (a
        ``Retry-After`` too long to wait in place is answered ``retry`` in either mode)."""
        if not self._started or self._closed or self._client is None:
            self._check_open()
        sub = record.subscription
        static = self._static.get(sub.id)
        url = sub.webhook_url
        if (static is None or static[0] is not sub or url is None
                or self._passed.get(url, 0.0) < time.monotonic()):
            # the first record, a changed subscription or an address check due: with awaits
            self._in_task(self._deliver_one(record, None, None, self._monotonic()), done)
            return True
        _, where, lines, signer = static
        body = payload_bytes(record)
        started = self._monotonic()
        assert self._client is not None  # checked in _check_open
        self._client.post_soon(
            where, lines + self._signature_headers(record, body, signer), body,
            timeout=self._timeout_s,
            on_done=functools.partial(self._answered, record, body, started, done))
        return True

    def _answered(self, record: Delivery, body: bytes, started: float, done: Done,
                  answer: Response | BaseException) -> None:
        """The first attempt of ``send`` ended (in the connection's callback)."""
        if isinstance(answer, Response) and 200 <= answer.status <= 299:
            done(DeliveryResult(record, "delivered", 1))
        elif isinstance(answer, Response | TimeoutError | HttpError):
            outcome = self._judge(answer) if isinstance(answer, Response) else self._failure(answer)
            self._in_task(self._deliver_one(record, body, outcome, started), done)
        elif not self._closed:
            done(answer)

    def _in_task(self, delivering: Awaitable[DeliveryResult], done: Done) -> None:
        async def run() -> None:
            try:
                result = await delivering
            except BaseException as exc:  # handed to the caller (a cancellation re-raised)
                if not self._closed:
                    done(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return
            if not self._closed:
                done(result)

        task = asyncio.ensure_future(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver_one(self, record: Delivery, body: bytes | None, first: _Attempt | None,
                           started: float) -> DeliveryResult:
        if record.subscription.webhook_url is None:
            return DeliveryResult(record, "dead", 0,
                                  f"subscription {record.subscription.id} has no webhook_url")
        try:
            return await self._deliver(record, body, first, started)
        except _Deferred as deferred:
            return DeliveryResult(record, "retry", 1, deferred.reason, deferred.retry_after)

    async def flush(self) -> list[DeliveryResult]:
        self._check_open()
        try:
            return await self._flush()
        except SinkBackpressure:
            raise  # the unsettled records stay added, by contract
        except BaseException:
            # Cancelled or broken mid-flush: the caller still owns every record it added (it
            # re-queues or re-parks them), so none may linger into the next flush.
            self._pending = {}
            raise

    async def _flush(self) -> list[DeliveryResult]:
        if len(self._pending) == 1:  # one key (the lanes' live path): no gather, no gate
            [queue] = self._pending.values()
            pause: list[float] = []
            results = await self._run_key(queue, pause)
            if not queue:
                self._pending = {}
            if pause:
                raise SinkBackpressure(max(pause), [r for _, r in results])
            return [r for _, r in results]
        gate = asyncio.Semaphore(self._concurrency)
        pause = []
        settled_pairs: list[tuple[int, DeliveryResult]] = []

        async def run_key(queue: list[tuple[int, Delivery]]) -> None:
            async with gate:
                settled_pairs.extend(await self._run_key(queue, pause))

        await asyncio.gather(*(run_key(queue) for queue in list(self._pending.values())))
        self._pending = {k: q for k, q in self._pending.items() if q}
        settled = [result for _, result in sorted(settled_pairs, key=lambda pair: pair[0])]
        if pause:
            raise SinkBackpressure(max(pause), settled)
        return settled

    async def _run_key(self, queue: list[tuple[int, Delivery]],
                       pause: list[float]) -> list[tuple[int, DeliveryResult]]:
        """Deliver one key's records in order; stops (leaving the rest queued) on a pause."""
        results: list[tuple[int, DeliveryResult]] = []
        while queue and not pause:
            seq, record = queue[0]
            try:
                result = await self._deliver(record)
            except _Deferred as deferred:
                if not self._park:
                    pause.append(deferred.retry_after)
                    return results
                result = DeliveryResult(record, "retry", 1, deferred.reason, deferred.retry_after)
            results.append((seq, result))
            queue.pop(0)
            if result.outcome == "retry":
                results.extend((s, _behind(r, result)) for s, r in queue)
                queue.clear()
        return results

    def _check_open(self) -> None:
        if not self._started or self._closed or self._client is None:
            raise DeliveryFailed("webhook sink used outside start()/close()", retriable=False)

    async def _deliver(self, record: Delivery, body: bytes | None = None,
                       first: _Attempt | None = None, started: float | None = None,
                       ) -> DeliveryResult:
        """Try ``record`` until delivered, dead, or deferred (raises ``_Deferred``); ``first``:
        the outcome of a first attempt already made at ``started``."""
        body = payload_bytes(record) if body is None else body
        deadline = (self._monotonic() if started is None else started) + self._max_elapsed_s
        attempt = 0
        outcome = first
        while True:
            attempt += 1
            if outcome is None or attempt > 1:
                outcome = await self._attempt(record, body)
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

    async def _attempt(self, record: Delivery, body: bytes) -> _Attempt:
        url = record.subscription.webhook_url
        assert url is not None and self._client is not None  # checked in add / _check_open
        try:
            await self._guard(url)
            where, headers, signer = self._static_parts(record.subscription)
            headers += self._signature_headers(record, body, signer)
        except DeliveryFailed as exc:
            return _Attempt(ok=False, retriable=exc.retriable, reason=exc.reason)
        try:
            response = await self._client.post(where, headers, body, timeout=self._timeout_s)
        except (TimeoutError, HttpError) as exc:
            return self._failure(exc)
        return self._judge(response)

    def _failure(self, exc: TimeoutError | HttpError) -> _Attempt:
        if isinstance(exc, PeerRefused):
            return _Attempt(ok=False, retriable=False, reason=f"target refused: {exc}")
        if isinstance(exc, HttpError):
            return _Attempt(ok=False, retriable=True,
                            reason=f"connection failed: {type(exc).__name__}: {exc}")
        return _Attempt(ok=False, retriable=True, reason=f"no answer within {self._timeout_s:g}s")

    async def _guard(self, url: str) -> None:
        # One DNS check per URL per _GUARD_TTL_S; concurrent records of one URL share the
        # lookup. A lookup that failed retriably (DNS hiccup) is redone on the next attempt.
        loop = asyncio.get_running_loop()
        cached = self._guards.get(url)
        if (cached is None or loop.time() - cached[0] > _GUARD_TTL_S
                or _failed_retriably(cached[1])):
            allow_private, allow_loopback = self._allow
            task = asyncio.ensure_future(check_target_async(
                url, allow_private=allow_private, allow_loopback=allow_loopback))
            cached = (loop.time(), task)
            self._guards[url] = cached
        task = cached[1]
        if not (task.done() and not task.cancelled() and task.exception() is None):
            await asyncio.shield(task)
        self._passed[url] = cached[0] + _GUARD_TTL_S  # ``send`` skips the check until then

    def _static_parts(self, sub: Subscription) -> tuple[Target, bytes, _Signer | None]:
        """The subscription's target, the header lines that are the same on every request and
        its signing key, prepared once per subscription object (a hot-reloaded subscription is
        a new object and replaces the entry of its id)."""
        cached = self._static.get(sub.id)
        if cached is None or cached[0] is not sub:
            assert sub.webhook_url is not None
            try:
                where = target(sub.webhook_url)
                lines = encode_headers({**sub.headers, "Content-Type": "application/json"})
            except ValueError as exc:
                raise TargetRefused(str(exc)) from None
            signer = None if sub.signing_secret is None else _Signer(_signing_key(sub.signing_secret))
            cached = (sub, where, lines, signer)
            self._static[sub.id] = cached
        return cached[1], cached[2], cached[3]

    def _signature_headers(self, record: Delivery, body: bytes, signer: _Signer | None) -> bytes:
        """``webhook-id``, ``webhook-timestamp`` (this attempt) and, with a secret,
        ``webhook-signature``: Standard Webhooks' ``v1,`` + base64 HMAC-SHA256 of
        ``id.timestamp.body`` with the secret's decoded key."""
        msg_id = record.id.encode("ascii")
        stamp = b"%d" % int(self._wall())
        lines = b"webhook-id: " + msg_id + b"\r\nwebhook-timestamp: " + stamp + b"\r\n"
        if signer is not None:
            lines += (b"webhook-signature: v1," + signer.sign(msg_id + b"." + stamp + b"." + body)
                      + b"\r\n")
        return lines

    def _judge(self, response: Response) -> _Attempt:
        status = response.status
        if 200 <= status <= 299:
            return _Attempt(ok=True)
        retry_after = None
        if status in (429, 503):
            retry_after = retry_after_seconds(response.header("retry-after"), self._wall())
        excerpt = response.text[:_REASON_BODY_CHARS].strip()
        reason = f"HTTP {status}" + (f": {excerpt}" if excerpt else "")
        if 300 <= status <= 399:
            reason += " (redirects are not followed)"
        return _Attempt(ok=False, retriable=is_retriable_status(status), reason=reason,
                        retry_after=retry_after)


class _Signer:
    """HMAC-SHA256 with one key, as ``hmac.digest`` computes it (RFC 2104), from the SHA-256
    states after the padded key's inner and outer blocks, computed once per key."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _SHA256_BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_SHA256_BLOCK, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def sign(self, message: bytes) -> bytes:
        """The base64 of the MAC of ``message``."""
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return binascii.b2a_base64(outer.digest(), newline=False)


def _behind(record: Delivery, blocker: DeliveryResult) -> DeliveryResult:
    """``retry`` for a record left unsent because an earlier one of its entity is parked."""
    return DeliveryResult(record, "retry", 0, f"behind {blocker.delivery_id}: {blocker.reason}")


def _failed_retriably(task: asyncio.Task[None]) -> bool:
    if not task.done() or task.cancelled():
        return task.cancelled()
    error = task.exception()
    return error is not None and not isinstance(error, TargetRefused)


def _signing_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (``whsec_`` + base64, padding optional)."""
    try:
        return base64.b64decode(secret.removeprefix(_SECRET_PREFIX) + "==")
    except binascii.Error:
        raise DeliveryFailed("the subscription's signing secret is not base64",
                             retriable=False) from None
