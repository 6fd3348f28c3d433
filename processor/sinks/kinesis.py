"""``KinesisSink``: Lytics documents to a subscription's Kinesis stream with ``PutRecords``.

Each record is ``kinesis_record(...)``: the same JSON document the webhook channel sends,
partition key from the subscription's ``identifier_field`` (fallback: entity id). Records are
grouped by target (region, role, stream) and sent in ``PutRecords`` calls of at most 500
records and 5 MiB (data + partition keys), the API's limits; a record over 1 MiB can never be
accepted and is ``dead`` at once.

``PutRecords`` fails per record: only the records that came back with an ``ErrorCode``
(``ProvisionedThroughputExceededException``, ``InternalFailure``) are sent again, after
``backoff_delay``, until ``max_attempts`` / ``max_elapsed_s`` -> ``dead``. A whole-call error is
retried when AWS says it may pass (throttling, 5xx, a stream that does not exist *yet*) and is
``dead`` otherwise (validation, access denied). botocore's own retries are turned off so that
this loop is the only retry policy.

Kinesis does not promise the order of records within one ``PutRecords`` call (AWS docs), and a
retried record lands after records that succeeded first; per-entity order is therefore not
guaranteed on this channel. Consumers de-duplicate and order by ``meta``/timestamps.

boto3 is blocking: every call (session, STS, client creation, ``put_records``) runs in a worker
thread via ``asyncio.to_thread``, never on the event loop.

With ``park_retriable=True`` a record still failing retriably when the budget is spent settles
as ``retry`` instead of ``dead``: the caller parks it and tries again later. With ``role_arn`` the sink assumes
the role through STS and re-assumes it before the credentials expire.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from processor.domain.backoff import backoff_delay
from processor.domain.payloads import Delivery, KinesisRecord, kinesis_record
from processor.sinks.base import DeliveryResult, Sink
from processor.sinks.errors import DeliveryFailed

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")
MAX_BATCH_RECORDS = 500
MAX_BATCH_BYTES = 5 * 1024 * 1024
MAX_RECORD_BYTES = 1024 * 1024
_ROLE_REFRESH_MARGIN_S = 300.0  # re-assume a role this long before its credentials expire
_RETRIABLE_CODES = frozenset({
    "ProvisionedThroughputExceededException", "LimitExceededException", "ThrottlingException",
    "InternalFailure", "ServiceUnavailable", "ResourceNotFoundException", "ResourceInUseException",
    "KMSThrottlingException", "RequestTimeout", "RequestExpired",
})


@dataclass(slots=True)
class _Pending:
    delivery: Delivery
    record: KinesisRecord
    attempts: int = 0
    failure: str | None = None
    retriable: bool = True

    @property
    def size(self) -> int:
        return len(self.record.data) + len(self.record.partition_key.encode())


Target = tuple[str, str | None, str]  # region, role_arn, stream


class KinesisSink(Sink):
    """Writes ``Delivery`` records of kinesis-channel subscriptions; see the module docstring.

    ``endpoint_url`` points the Kinesis client elsewhere (an emulator); ``session`` injects the
    boto3 session (credentials); ``sts_endpoint_url`` does the same for STS.
    """

    def __init__(self, *, endpoint_url: str | None = None, session: boto3.Session | None = None,
                 sts_endpoint_url: str | None = None, max_attempts: int = 8,
                 max_elapsed_s: float = 120.0, backoff_base_s: float = 0.1,
                 backoff_cap_s: float = 5.0, timeout_s: float = 10.0,
                 rng: random.Random | None = None, sleep: Sleep = asyncio.sleep,
                 monotonic: Callable[[], float] = time.monotonic,
                 park_retriable: bool = False) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self._endpoint_url = endpoint_url
        self._sts_endpoint_url = sts_endpoint_url
        self._session = session
        self._max_attempts = max_attempts
        self._max_elapsed_s = max_elapsed_s
        self._backoff = (backoff_base_s, backoff_cap_s)
        self._config = Config(retries={"total_max_attempts": 1}, connect_timeout=timeout_s,
                              read_timeout=timeout_s)
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._monotonic = monotonic
        self._clients: dict[tuple[str, str | None], tuple[Any, float]] = {}
        self._client_lock = threading.Lock()  # boto3 sessions are not thread-safe
        self._pending: list[_Pending] = []
        self._park = park_retriable
        self._started = False
        self._closed = False

    async def start(self) -> None:
        if self._session is None:
            self._session = await asyncio.to_thread(boto3.Session)
        self._started = True

    async def close(self) -> None:
        self._closed = True
        clients, self._clients = self._clients, {}
        for client, _ in clients.values():
            await asyncio.to_thread(client.close)

    async def add(self, record: Delivery) -> None:
        self._check_open()
        sub = record.subscription
        if not sub.region or not sub.stream:
            raise DeliveryFailed(f"subscription {sub.id} has no kinesis region/stream",
                                 retriable=False)
        self._pending.append(_Pending(record, kinesis_record(sub, record.transition)))

    async def flush(self) -> list[DeliveryResult]:
        self._check_open()
        pending, self._pending = self._pending, []
        order = {id(p): i for i, p in enumerate(pending)}
        by_target: dict[Target, list[_Pending]] = {}
        for item in pending:
            sub = item.delivery.subscription
            assert sub.region is not None and sub.stream is not None  # checked in add
            by_target.setdefault((sub.region, sub.role_arn, sub.stream), []).append(item)
        settled: dict[int, DeliveryResult] = {}
        outcomes = await asyncio.gather(*(self._deliver(t, items) for t, items in by_target.items()))
        for results in outcomes:
            for item, result in results:
                settled[order[id(item)]] = result
        return [settled[i] for i in sorted(settled)]

    def _check_open(self) -> None:
        if not self._started or self._closed:
            raise DeliveryFailed("kinesis sink used outside start()/close()", retriable=False)

    async def _deliver(self, target: Target,
                       items: list[_Pending]) -> list[tuple[_Pending, DeliveryResult]]:
        region, role_arn, stream = target
        done: list[tuple[_Pending, DeliveryResult]] = []
        deadline = self._monotonic() + self._max_elapsed_s
        todo: list[_Pending] = []
        for item in items:
            if item.size > MAX_RECORD_BYTES:
                item.attempts = 1
                done.append((item, self._dead(item, f"record of {item.size} bytes exceeds "
                                                    "Kinesis' 1 MiB limit")))
            else:
                todo.append(item)
        round_no = 0
        while todo:
            round_no += 1
            try:
                client = await self._client(region, role_arn)
            except (ClientError, BotoCoreError) as exc:
                for item in todo:
                    item.failure, item.retriable = _describe(exc, "cannot get a Kinesis client")
            else:
                for chunk in chunks(todo, lambda p: p.size):
                    await self._put(client, stream, chunk)
            todo = self._settle(todo, done, deadline)
            if todo:
                base, cap = self._backoff
                await self._sleep(backoff_delay(round_no, base=base, cap=cap, rng=self._rng))
        return done

    async def _put(self, client: Any, stream: str, chunk: list[_Pending]) -> None:
        """One ``PutRecords``; note each record's failure (``None`` when written)."""
        entries = [{"Data": p.record.data, "PartitionKey": p.record.partition_key} for p in chunk]
        for item in chunk:
            item.attempts += 1
            item.failure = None
        try:
            response = await asyncio.to_thread(client.put_records, StreamName=stream,
                                               Records=entries)
        except (ClientError, BotoCoreError) as exc:
            reason, retriable = _describe(exc, "PutRecords failed")
            for item in chunk:
                item.failure, item.retriable = reason, retriable
            return
        for item, answer in zip(chunk, response["Records"], strict=True):
            if answer.get("ErrorCode"):
                item.failure = f"{answer['ErrorCode']}: {answer.get('ErrorMessage', '')}".rstrip(": ")
                item.retriable = True  # per-record codes are throughput or internal failures

    def _settle(self, todo: list[_Pending], done: list[tuple[_Pending, DeliveryResult]],
                deadline: float) -> list[_Pending]:
        again: list[_Pending] = []
        out_of_time = self._monotonic() >= deadline
        for item in todo:
            if item.failure is None:
                done.append((item, DeliveryResult(item.delivery, "delivered", item.attempts)))
            elif not item.retriable:
                done.append((item, self._dead(item, item.failure)))
            elif (item.attempts >= self._max_attempts or out_of_time) and self._park:
                done.append((item, DeliveryResult(item.delivery, "retry", item.attempts,
                                                  item.failure)))
            elif item.attempts >= self._max_attempts or out_of_time:
                done.append((item, self._dead(
                    item, f"gave up after {item.attempts} attempts: {item.failure}")))
            else:
                again.append(item)
        return again

    def _dead(self, item: _Pending, reason: str) -> DeliveryResult:
        log.warning("kinesis dead: subscription=%s delivery=%s stream=%s reason=%s",
                    item.delivery.subscription.id, item.delivery.id,
                    item.delivery.subscription.stream, reason)
        return DeliveryResult(item.delivery, "dead", item.attempts, reason)

    async def _client(self, region: str, role_arn: str | None) -> Any:
        cached = self._clients.get((region, role_arn))
        if cached is not None and self._monotonic() < cached[1]:
            return cached[0]
        client, expires = await asyncio.to_thread(self._make_client, region, role_arn)
        self._clients[(region, role_arn)] = (client, expires)
        return client

    def _make_client(self, region: str, role_arn: str | None) -> tuple[Any, float]:
        """Runs in a worker thread: STS and client construction block."""
        with self._client_lock:
            assert self._session is not None
            session = self._session
            if role_arn is None:
                return (session.client("kinesis", region_name=region, config=self._config,
                                       endpoint_url=self._endpoint_url), float("inf"))
            sts = session.client("sts", region_name=region, endpoint_url=self._sts_endpoint_url)
            answer = sts.assume_role(RoleArn=role_arn, RoleSessionName="signalbox-delivery")
            creds = answer["Credentials"]
            lifetime = creds["Expiration"].timestamp() - time.time()
            client = session.client(
                "kinesis", region_name=region, config=self._config,
                endpoint_url=self._endpoint_url, aws_access_key_id=creds["AccessKeyId"],
                aws_secret_access_key=creds["SecretAccessKey"],
                aws_session_token=creds["SessionToken"])
            return client, self._monotonic() + max(0.0, lifetime - _ROLE_REFRESH_MARGIN_S)


def chunks(items: Sequence[T], size_of: Callable[[T], int], *,
           max_records: int = MAX_BATCH_RECORDS, max_bytes: int = MAX_BATCH_BYTES,
           ) -> Iterator[list[T]]:
    """Consecutive runs, in order, of at most ``max_records`` items and ``max_bytes`` (an item
    alone larger than ``max_bytes`` still forms its own run; callers drop those first)."""
    chunk: list[T] = []
    size = 0
    for item in items:
        item_size = size_of(item)
        if chunk and (len(chunk) >= max_records or size + item_size > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += item_size
    if chunk:
        yield chunk


def _describe(exc: ClientError | BotoCoreError, what: str) -> tuple[str, bool]:
    """A failure's reason and whether AWS says retrying may help."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        retriable = code in _RETRIABLE_CODES or status >= 500
        return f"{what}: {code}: {error.get('Message', '')}".rstrip(": "), retriable
    return f"{what}: {type(exc).__name__}: {exc}", True  # connection-level: the network recovers
