"""``Http1Client`` against small scripted asyncio servers on loopback: keep-alive reuse,
chunked and read-until-close answers, interim 1xx answers, a stale pooled connection, a server
that hangs up mid-answer, and header encoding that refuses injection."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from processor.sinks.http1 import (
    ConnectFailed,
    ConnectionLost,
    Http1Client,
    PeerRefused,
    ProtocolError,
    encode_headers,
    target,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


async def serve(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/hook?a=1"


def run(handler: Handler, go: Callable[[Http1Client, str], Awaitable[None]]) -> None:
    async def main() -> None:
        server, url = await serve(handler)
        client = Http1Client()
        try:
            await go(client, url)
        finally:
            await client.aclose()
            server.close()
    asyncio.run(main())


def test_keep_alive_reuses_one_connection_and_sends_what_was_given() -> None:
    seen: list[tuple[bytes, bytes]] = []
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                seen.append(await read_request(reader))
            except asyncio.IncompleteReadError:
                return
            writer.write(b"HTTP/1.1 201 Created\r\nX-Got: yes\r\nContent-Length: 2\r\n\r\nok")

    async def go(client: Http1Client, url: str) -> None:
        for n in range(3):
            response = await client.post(url, encode_headers({"X-N": str(n)}), b'{"n":%d}' % n)
            assert (response.status, response.body, response.header("x-got")) == (201, b"ok", "yes")

    run(handler, go)
    assert connections == 1 and len(seen) == 3
    head, body = seen[2]
    assert head.startswith(b"POST /hook?a=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nX-N: 2\r\n" in head and b"\r\nContent-Length: 7\r\n" in head
    assert body == b'{"n":2}'


def test_chunked_interim_and_read_until_close_answers() -> None:
    answers = [
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n",
        b"HTTP/1.0 500 Oops\r\n\r\nno length here",
    ]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while answers:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            answer = answers.pop(0)
            # bytes arrive in small pieces: the parser must wait for the whole answer
            for i in range(0, len(answer), 7):
                writer.write(answer[i:i + 7])
                await writer.drain()
            if not answer.startswith(b"HTTP/1.1"):
                writer.close()
                return

    async def go(client: Http1Client, url: str) -> None:
        first = await client.post(url, b"", b"{}")
        assert (first.status, first.body, first.keep_alive) == (200, b"abcde", True)
        second = await client.post(url, b"", b"{}")
        assert (second.status, second.text, second.keep_alive) == (500, "no length here", False)

    run(handler, go)


def test_a_stale_pooled_connection_is_replaced_transparently() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()
        # the server forgets the connection without telling the client (keep-alive timeout)
        writer.transport.abort()

    async def go(client: Http1Client, url: str) -> None:
        assert (await client.post(url, b"", b"1")).status == 204
        assert (await client.post(url, b"", b"2")).status == 204

    run(handler, go)
    assert connections == 2


def test_a_server_hanging_up_mid_answer_is_connection_lost() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
        await writer.drain()
        writer.close()

    async def go(client: Http1Client, url: str) -> None:
        with pytest.raises(ConnectionLost):
            await client.post(url, b"", b"{}")

    run(handler, go)


def test_garbage_is_a_protocol_error_and_a_timeout_closes_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, body = await read_request(reader)
        if body == b"garbage":
            writer.write(b"SMTP ready\r\n\r\n")
        else:
            await asyncio.sleep(5)  # never answers in time

    async def go(client: Http1Client, url: str) -> None:
        with pytest.raises(ProtocolError):
            await client.post(url, b"", b"garbage")
        with pytest.raises(TimeoutError):
            await client.post(url, b"", b"slow", timeout=0.2)
        with pytest.raises(TimeoutError):  # a caller's own timeout (cancellation) works too
            async with asyncio.timeout(0.2):
                await client.post(url, b"", b"slow")
        assert client.open_connections == 0  # no connection is reused

    run(handler, go)


def test_connection_refused_is_connect_failed() -> None:
    async def main() -> None:
        server, url = await serve(lambda r, w: asyncio.sleep(0))
        server.close()
        await server.wait_closed()
        client = Http1Client()
        with pytest.raises(ConnectFailed):
            await client.post(url, b"", b"{}")
        await client.aclose()
    asyncio.run(main())


def test_targets_and_headers() -> None:
    where = target("https://Example.com/a path/?q=x y")
    assert where.origin == ("https", "example.com", 443) and where.tls
    assert where.head == b"POST /a%20path/?q=x%20y HTTP/1.1\r\nHost: example.com\r\n"
    assert target("http://[::1]:8080/").head.endswith(b"Host: [::1]:8080\r\n")
    with pytest.raises(ValueError):
        target("ftp://example.com/")
    assert encode_headers({"A": "1", "b-c": "x y"}) == b"A: 1\r\nb-c: x y\r\n"
    for bad in ({"A": "1\r\nInjected: yes"}, {"Bad Name": "1"}):
        with pytest.raises(ValueError):
            encode_headers(bad)


@pytest.mark.parametrize("headers", [{"X-A": "v\n"}, {"X-A\n": "v"}, {"X-A": "v\r\nX-B: w"}])
def test_a_trailing_newline_is_not_a_valid_header(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        encode_headers(headers)


def test_a_connection_to_a_refused_address_is_dropped_before_sending() -> None:
    """The name is resolved again at connect time: the address reached is what is judged."""
    requests = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        try:
            await read_request(reader)
            requests += 1
        except asyncio.IncompleteReadError:
            return

    async def main() -> None:
        server, url = await serve(handler)
        client = Http1Client(check_peer=lambda a: "loopback" if a == "127.0.0.1" else None)
        try:
            with pytest.raises(PeerRefused, match="127.0.0.1: loopback"):
                await client.post(url, b"", b"{}", timeout=5)
            assert client.open_connections == 0
        finally:
            await client.aclose()
            server.close()

    asyncio.run(main())
    assert requests == 0


def test_a_chunked_answer_in_many_small_pieces_is_read_whole() -> None:
    """20,000 one-byte chunks arriving in many packets, then a trailer."""
    pieces = 20_000

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for n in range(pieces):
            writer.write(b"1\r\n%c\r\n" % (97 + n % 26))
            if n % 1000 == 0:
                await writer.drain()
        writer.write(b"0\r\nX-Trailer: 1\r\n\r\n")
        await writer.drain()

    async def go(client: Http1Client, url: str) -> None:
        response = await client.post(url, b"", b"{}", timeout=10)
        assert len(response.body) == pieces and response.body.startswith(b"abc")

    run(handler, go)


@pytest.mark.parametrize("tail", [b"1" * 10_000, b"0\r\n" + b"X-T: 1\r\n" * 20_000, b"3\r\nabcXY"])
def test_a_chunked_answer_that_never_ends_properly_is_refused(tail: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + tail)
        await writer.drain()
        await asyncio.sleep(5)

    async def go(client: Http1Client, url: str) -> None:
        with pytest.raises(ProtocolError):
            await client.post(url, b"", b"{}", timeout=4)

    run(handler, go)
