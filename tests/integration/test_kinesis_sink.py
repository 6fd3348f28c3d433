"""KinesisSink against the kinesalite emulator from ``deploy/services.sh up``.

Partial failures (``FailedRecordCount``) cannot be provoked on the emulator, so one test points
the sink at the loopback receiver answering ``PutRecords`` the way Kinesis does when some
records are throttled: a real HTTP exchange through botocore, scripted on the server side.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import orjson
import pytest

from processor.domain.payloads import Delivery, lytics_payload
from processor.domain.subscriptions import Subscription
from processor.domain.transitions import EntityRef, Transition
from processor.sinks.base import DeliveryResult
from processor.sinks.kinesis import MAX_BATCH_BYTES, KinesisSink
from tests.support.receiver import ReceivedRequest, Reply, WebhookReceiver

REGION = "us-east-1"


def session() -> boto3.Session:
    return boto3.Session(aws_access_key_id="local", aws_secret_access_key="local",
                         region_name=REGION)


def subscription(stream: str) -> Subscription:
    return Subscription.model_validate({"id": "sub-kin", "channel": "kinesis",
                                        "segment_ids": ["seg1"], "region": REGION,
                                        "stream": stream, "identifier_field": "email"})


def delivery(sub: Subscription, n: int, *, padding: int = 0) -> Delivery:
    identifiers = {"user_id": f"u{n}"}
    if n % 3:  # every third user has no email: the partition key falls back to the entity id
        identifiers["email"] = f"user{n}@example.com"
    return Delivery(sub, Transition(
        transition_id=f"t{n}", entity=EntityRef("user_id", f"u{n}"), segment_id="seg1",
        segment_slug="demo", event="enter", at_ms=1_000 + n, identifiers=identifiers,
        profile={"n": n, "pad": "x" * padding}))


def deliver(sink: KinesisSink, records: list[Delivery]) -> list[DeliveryResult]:
    async def go() -> list[DeliveryResult]:
        await sink.start()
        try:
            for record in records:
                await sink.add(record)
            return await sink.flush()
        finally:
            await sink.close()
    return asyncio.run(go())


@pytest.fixture
def kinesis(kinesis_endpoint: str) -> Iterator[tuple[Any, Callable[[int], str]]]:
    """A client and a ``make(shards) -> stream name`` that deletes its streams afterwards
    (the emulator enforces AWS' account shard limit, so streams must not pile up)."""
    client = session().client("kinesis", endpoint_url=kinesis_endpoint)
    made: list[str] = []

    def make(shards: int) -> str:
        stream = f"sink-{uuid.uuid4().hex[:10]}"
        create_stream(client, stream, shards)
        made.append(stream)
        return stream

    yield client, make
    for stream in made:
        client.delete_stream(StreamName=stream, EnforceConsumerDeletion=True)


def create_stream(client: Any, stream: str, shards: int) -> None:
    client.create_stream(StreamName=stream, ShardCount=shards)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = client.describe_stream(StreamName=stream)["StreamDescription"]["StreamStatus"]
        if status == "ACTIVE":
            return
        time.sleep(0.1)
    raise AssertionError(f"stream {stream} did not become ACTIVE")


def read_stream(client: Any, stream: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for shard in client.list_shards(StreamName=stream)["Shards"]:
        iterator = client.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"],
                                             ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while iterator:
            page = client.get_records(ShardIterator=iterator, Limit=10_000)
            records.extend(page["Records"])
            if not page["Records"]:
                break
            iterator = page.get("NextShardIterator")
    return records


def test_put_records_in_chunks_and_read_them_back(
        kinesis_endpoint: str, kinesis: tuple[Any, Callable[[int], str]]) -> None:
    client, make = kinesis
    stream = make(2)
    sub = subscription(stream)
    records = [delivery(sub, n) for n in range(650)]  # > 500: two PutRecords calls at least

    results = deliver(KinesisSink(endpoint_url=kinesis_endpoint, session=session()), records)

    assert [r.delivery for r in results] == records
    assert all(r.delivered and r.attempts == 1 for r in results)
    stored = read_stream(client, stream)
    assert len(stored) == 650
    by_n = {orjson.loads(r["Data"])["data"]["n"]: r for r in stored}
    assert sorted(by_n) == list(range(650))
    for n, record in by_n.items():
        expected_key = f"user{n}@example.com" if n % 3 else f"u{n}"
        assert record["PartitionKey"] == expected_key
        original = records[n]
        assert orjson.loads(record["Data"]) == lytics_payload(sub, original.transition,
                                                              version="v2")


def test_large_records_are_split_by_bytes_and_oversized_ones_are_dead(
        kinesis_endpoint: str, kinesis: tuple[Any, Callable[[int], str]]) -> None:
    client, make = kinesis
    stream = make(1)
    sub = subscription(stream)
    big = 900 * 1024  # 12 of these are ~10.5 MiB: needs 3 calls by the 5 MiB rule
    records = [delivery(sub, n, padding=big) for n in range(12)]
    records.append(delivery(sub, 99, padding=1024 * 1024))  # over the 1 MiB record limit

    results = deliver(KinesisSink(endpoint_url=kinesis_endpoint, session=session()), records)

    assert all(r.delivered for r in results[:12])
    assert results[12].outcome == "dead" and "1 MiB" in (results[12].reason or "")
    assert 12 * big > 2 * MAX_BATCH_BYTES
    assert len(read_stream(client, stream)) == 12


def test_missing_stream_is_retried_then_dead(kinesis_endpoint: str) -> None:
    sub = subscription(f"sink-missing-{uuid.uuid4().hex[:10]}")
    sink = KinesisSink(endpoint_url=kinesis_endpoint, session=session(), max_attempts=3,
                       backoff_base_s=0.01)
    results = deliver(sink, [delivery(sub, 1), delivery(sub, 2)])
    assert [r.outcome for r in results] == ["dead", "dead"]
    assert all(r.attempts == 3 for r in results)
    assert all("ResourceNotFoundException" in (r.reason or "") for r in results)


def test_only_failed_records_are_retried() -> None:
    """The server throttles some records of each call; only those are sent again."""
    rng = random.Random(5)
    sent: Counter[str] = Counter()

    def kinesis(_index: int, request: ReceivedRequest) -> Reply:
        body = request.json
        answers, failed = [], 0
        for entry in body["Records"]:
            n = orjson.loads(base64.b64decode(entry["Data"]))["data"]["n"]
            sent[str(n)] += 1
            if rng.random() < 0.4:
                failed += 1
                answers.append({"ErrorCode": "ProvisionedThroughputExceededException",
                                "ErrorMessage": "Rate exceeded for shard"})
            else:
                answers.append({"SequenceNumber": str(n), "ShardId": "shardId-000000000000"})
        payload = {"FailedRecordCount": failed, "Records": answers}
        return Reply(status=200, headers={"Content-Type": "application/x-amz-json-1.1"},
                     body=json.dumps(payload).encode())

    with WebhookReceiver(kinesis) as receiver:
        sub = subscription("throttled")
        records = [delivery(sub, n) for n in range(40)]
        results = deliver(KinesisSink(endpoint_url=receiver.url.rstrip("/"), session=session(),
                                      max_attempts=30, backoff_base_s=0.001), records)
        calls = receiver.requests
    assert all(r.delivered for r in results)
    assert len(calls) > 1
    assert calls[0].header("x-amz-target") == "Kinesis_20131202.PutRecords"
    assert len(calls[0].json["Records"]) == 40
    assert all(len(c.json["Records"]) < 40 for c in calls[1:])  # only the failed ones again
    for result in results:
        n = str(result.delivery.transition.profile["n"])
        assert sent[n] == result.attempts
    assert max(r.attempts for r in results) > 1
