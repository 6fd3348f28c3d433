"""The per-record fast path of webhook lanes: ``format_ms`` and the precomputed HMAC give exactly
what datetime and ``hmac.digest`` give, ``post_soon`` answers through its callback (a
stale pooled connection is re-sent, a stalled one times out on the connection's own timer), and
a lane of sinks with ``send`` keeps each entity in order and settles every record."""

from __future__ import annotations

import asyncio
import base64
import hmac
import random
from collections.abc import Callable
from datetime import UTC, datetime

from processor.domain.payloads import Delivery
from processor.domain.transitions import format_ms
from processor.metrics import DeliveryMetrics
from processor.sinks.base import DeliveryResult
from processor.sinks.http1 import Http1Client, Response, target
from processor.sinks.lane import LanePolicy, SubscriptionLane
from processor.sinks.webhook import _Signer
from tests.unit.delivery.test_http1 import read_request, serve
from tests.unit.delivery.test_lane import SUB, Harness, ScriptedSink, transition


def test_format_ms_with_its_cache_is_the_plain_datetime_text() -> None:
    def plain(epoch_ms: int) -> str:
        moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"

    draw = random.Random(7)
    stamps = [draw.randrange(-10**13, 2 * 10**14) for _ in range(20_000)]
    stamps += [0, -1, 999, 1000, -1000, -999, 1_602_707_253_916]
    stamps += [1_602_707_253_000 + n for n in range(0, 5000, 7)]  # many in one second
    assert [format_ms(ms) for ms in stamps] == [plain(ms) for ms in stamps]


def test_the_signer_computes_hmac_sha256() -> None:
    draw = random.Random(3)
    for size in (1, 24, 32, 64, 65, 100):
        key = draw.randbytes(size)
        message = draw.randbytes(draw.randrange(0, 2000))
        expected = base64.b64encode(hmac.digest(key, message, "sha256"))
        assert _Signer(key).sign(message) == expected


def answers(client: Http1Client, url: str, count: int, timeout: float = 5.0,
            ) -> asyncio.Future[list[Response | BaseException]]:
    """``count`` requests through ``post_soon``, one after the other from the callbacks."""
    done: asyncio.Future[list[Response | BaseException]] = asyncio.get_running_loop().create_future()
    got: list[Response | BaseException] = []

    def on_done(answer: Response | BaseException) -> None:
        got.append(answer)
        if len(got) == count:
            done.set_result(got)
        else:
            client.post_soon(target(url), b"", b"{}", timeout=timeout, on_done=on_done)

    client.post_soon(target(url), b"", b"{}", timeout=timeout, on_done=on_done)
    return done


def test_post_soon_reuses_the_connection_from_its_callback() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")

    async def main() -> list[Response | BaseException]:
        server, url = await serve(handler)
        client = Http1Client()
        try:
            return await asyncio.wait_for(answers(client, url, 20), 10)
        finally:
            await client.aclose()
            server.close()

    got = asyncio.run(main())
    assert [a.status for a in got if isinstance(a, Response)] == [204] * 20
    assert connections == 1


def test_post_soon_sends_again_when_a_pooled_connection_went_stale() -> None:
    served = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await read_request(reader)
        served += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()  # keep-alive was announced, but the server hangs up right away

    async def main() -> list[Response | BaseException]:
        server, url = await serve(handler)
        client = Http1Client()
        try:
            first = await client.post(url, b"", b"{}", timeout=5)
            assert first.status == 200
            await asyncio.sleep(0.1)  # the pooled connection is closed by now
            return await asyncio.wait_for(answers(client, url, 1), 10)
        finally:
            await client.aclose()
            server.close()

    [answer] = asyncio.run(main())
    assert isinstance(answer, Response) and answer.status == 200 and served == 2


def test_post_soon_times_out_on_the_connections_timer() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            if served.append(1) or len(served) > 1:
                await asyncio.sleep(30)  # the second request is never answered
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    served: list[int] = []

    async def main() -> list[Response | BaseException]:
        server, url = await serve(handler)
        client = Http1Client()
        try:
            return await asyncio.wait_for(answers(client, url, 2, timeout=0.3), 10)
        finally:
            await client.aclose()
            server.close()

    first, second = asyncio.run(main())
    assert isinstance(first, Response) and isinstance(second, TimeoutError)


class SendingSink(ScriptedSink):
    """A scripted sink that also delivers single records by itself, answering from a later
    loop callback as the webhook sink does from its connection's."""

    def send(self, record: Delivery,
             done: Callable[[DeliveryResult | BaseException], None]) -> bool:
        async def later() -> None:
            await asyncio.sleep(0)
            await self.add(record)
            [result] = await self.flush()
            done(result)

        asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(later()))
        return True


def test_a_lane_of_sending_sinks_keeps_entity_order_and_parks_failures() -> None:
    failures = {"t-a-1": 1}

    def answer(d: Delivery) -> str:
        left = failures.get(d.transition.transition_id, 0)
        if left:
            failures[d.transition.transition_id] = left - 1
            return "retry"
        return "delivered"

    async def scenario() -> Harness:
        h = Harness(answer)  # type: ignore[arg-type]
        h.lane = SubscriptionLane(
            SUB, live=[SendingSink(answer, h.sent) for _ in range(4)],  # type: ignore[arg-type]
            retry=[ScriptedSink(answer, h.sent)], parks=h.parks,  # type: ignore[arg-type]
            dead_letter=h.lane._dead_letter, metrics=DeliveryMetrics(),
            policy=LanePolicy(in_place_attempts=1, in_place_budget_s=0.0, max_attempts=4,
                              backoff_base_s=0.001, backoff_cap_s=0.002, tick_s=0.005),
            chunk=1)
        h.metrics = h.lane._metrics
        await h.lane.start([0])
        offset = 0
        for n in range(4):
            for entity in "abc":
                h.submit(offset, transition(entity, n))
                offset += 1
        await h.until(lambda: len(h.acks) == 12 and h.parks.count_all() == 0
                      and h.metrics.value("signalbox_delivery_delivered_total", "s1") == 12)
        await h.lane.close()
        return h

    h = asyncio.run(scenario())
    assert sorted(h.acks) == list(range(12)) and not h.dead
    for entity in "abc":
        firsts = list(dict.fromkeys(t for t in h.delivered_ids() if t.split("-")[1] == entity))
        assert firsts == [f"t-{entity}-{n}" for n in range(4)]
