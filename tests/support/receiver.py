"""A real HTTP server on loopback that records what webhook senders POST to it.

``WebhookReceiver`` runs a small asyncio HTTP/1.1 server (keep-alive and pipelining, so pooled
clients behave as they do against real targets) on ``127.0.0.1`` and a free port, on its own
event loop in a background thread. It is deliberately lean (one ``asyncio.Protocol``, no
framework): the delivery benchmark runs it on the same cores as the sender, so every
microsecond it spends per request is taken from what is measured. Every request is recorded
*before* it is answered (method, path with query, headers, raw body, parsed JSON, receive
time), so a test can assert on a request whose answer is a stall or an error.

How it answers is the *behaviour*: a fixed status, or a function
``(index, request) -> status | (status, headers, delay_s) | Reply`` that can script 500s, 429s
with ``Retry-After``, or stalls (``delay_s``). The function runs on the receiver's loop thread.
A request's ``json`` is parsed when first read, not on the receiver's loop.
A stalled answer holds only its own connection (later requests on it wait, as HTTP/1.1
requires); stalls end when the receiver closes (the connection is closed unanswered), so a
test never waits for a stalled handler at teardown.

    with WebhookReceiver() as receiver:
        ...post to receiver.url...
        got = receiver.wait_for(3, timeout=5)
"""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any

_MAX_HEAD = 64 * 1024  # request line + headers; more is answered 431 and closed


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the receiver saw it. ``headers`` keys are lower-cased."""

    index: int
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float  # time.time() when the body had been read
    raw_headers: tuple[tuple[str, str], ...] = ()

    @functools.cached_property
    def json(self) -> Any:
        """The body parsed as JSON (None if empty or not JSON)."""
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    body: bytes = b""


Answer = int | tuple[int, Mapping[str, str], float] | Reply
Behaviour = int | Callable[[int, ReceivedRequest], Answer]


def _as_reply(answer: Answer) -> Reply:
    if isinstance(answer, Reply):
        return answer
    if isinstance(answer, int):
        return Reply(status=answer)
    status, headers, delay_s = answer
    return Reply(status=status, headers=dict(headers), delay_s=delay_s)


class WebhookReceiver:
    """Records requests and answers them according to ``behaviour`` (default: 200).

    Thread-safe: ``requests``/``wait_for`` may be called from any thread while the server
    answers on its own thread. ``behaviour`` may be changed at any time with
    ``set_behaviour``; request indexes count from 0 since start (or the last ``clear``).
    """

    def __init__(self, behaviour: Behaviour = 200, *, host: str = "127.0.0.1") -> None:
        self._behaviour = behaviour
        self._host = host
        self._records: list[ReceivedRequest] = []
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._address: tuple[str, int] | None = None
        self._connections: set[_Connection] = set()

    # lifecycle ---------------------------------------------------------------------------
    def start(self) -> WebhookReceiver:
        loop = asyncio.new_event_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, 0))
        # A pooled client opens many connections in a burst; a short backlog resets them.
        sock.listen(1024)
        sock.setblocking(False)
        self._address = sock.getsockname()[:2]
        self._loop = loop
        self._thread = threading.Thread(target=_serve, args=(loop,), name="webhook-receiver",
                                        daemon=True)
        self._thread.start()
        # Made on the receiver's own loop: the caller may be running a loop of its own.
        made = asyncio.run_coroutine_threadsafe(
            loop.create_server(lambda: _Connection(self), sock=sock), loop)
        self._server = made.result(timeout=10)
        return self

    def close(self) -> None:
        loop, server = self._loop, self._server
        if loop is None or server is None:
            return

        def stop() -> None:
            server.close()
            for connection in list(self._connections):
                connection.abort()
            loop.call_soon(loop.stop)  # after the aborted connections' callbacks

        loop.call_soon_threadsafe(stop)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._loop = self._server = None

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # what tests use ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:45123/``; any path under it is accepted."""
        if self._address is None:
            raise RuntimeError("receiver not started")
        host, port = self._address
        return f"http://{host!s}:{port}/"

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._cond:
            return list(self._records)

    @property
    def count(self) -> int:
        """How many requests arrived (cheaper than ``len(requests)``)."""
        with self._cond:
            return len(self._records)

    def set_behaviour(self, behaviour: Behaviour) -> None:
        with self._cond:
            self._behaviour = behaviour

    def clear(self) -> None:
        with self._cond:
            self._records.clear()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedRequest]:
        """Block until at least ``count`` requests arrived; return them all.

        Raises ``AssertionError`` (with what did arrive) after ``timeout`` seconds.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._records) >= count, timeout=timeout):
                raise AssertionError(
                    f"expected {count} requests within {timeout}s, got {len(self._records)}: "
                    f"{[(r.method, r.path) for r in self._records]}"
                )
            return list(self._records)

    # called on the receiver's loop -------------------------------------------------------
    def _answer(self, method: str, path: str, raw_headers: list[tuple[str, str]],
                headers: dict[str, str], body: bytes) -> Reply:
        with self._cond:
            request = ReceivedRequest(
                index=len(self._records), method=method, path=path, headers=headers, body=body,
                received_at=time.time(), raw_headers=tuple(raw_headers),
            )
            self._records.append(request)
            self._cond.notify_all()
            behaviour = self._behaviour
        if isinstance(behaviour, int):
            return _OK if behaviour == 200 else Reply(status=behaviour)
        try:
            return _as_reply(behaviour(request.index, request))
        except Exception as exc:  # a broken script must show up in the test, not hang it
            return Reply(status=599, body=f"behaviour raised {exc!r}".encode())


_OK = Reply()


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.close()


def _response(reply: Reply, *, head: bool, close: bool) -> bytes:
    try:
        phrase = HTTPStatus(reply.status).phrase
    except ValueError:
        phrase = "Unknown"
    lines = [f"HTTP/1.1 {reply.status} {phrase}"]
    lines += [f"{name}: {value}" for name, value in reply.headers.items()]
    lines.append(f"Content-Length: {len(reply.body)}")
    if close:
        lines.append("Connection: close")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return data if head else data + reply.body


_OK_BYTES = _response(_OK, head=False, close=False)


class _Connection(asyncio.Protocol):
    """One client connection: parses requests as bytes arrive and answers them in order."""

    def __init__(self, receiver: WebhookReceiver) -> None:
        self._receiver = receiver
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._stalled: deque[tuple[Reply, bool, bool]] = deque()  # answers held by a stall
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._receiver._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._receiver._connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        self._transport = None

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while not self._closing and self._parse_one():
            pass

    def _parse_one(self) -> bool:
        """Handle one complete request from the buffer; False when more bytes are needed."""
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > _MAX_HEAD:
                self._fail(431)
            return False
        try:
            head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
            method, path, version = head[0].split(" ", 2)
            raw_headers = []
            for line in head[1:]:
                name, _, value = line.partition(":")
                raw_headers.append((name.strip(), value.strip()))
        except ValueError:
            self._fail(400)
            return False
        headers = {k.lower(): v for k, v in raw_headers}
        start = end + 4
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parsed = _dechunk(buffer, start)
            if parsed is None:
                return False
            body, consumed = parsed
        else:
            try:
                length = int(headers.get("content-length") or 0)
            except ValueError:
                self._fail(400)
                return False
            if len(buffer) < start + length:
                if headers.get("expect", "").lower() == "100-continue" and len(buffer) == start:
                    self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
                return False
            body, consumed = bytes(buffer[start:start + length]), start + length
        del buffer[:consumed]
        connection = headers.get("connection", "").lower()
        close = connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive")
        reply = self._receiver._answer(method, path, raw_headers, headers, body)
        self._respond(reply, method == "HEAD", close)
        if close:
            self._closing = True
        return True

    def _respond(self, reply: Reply, head: bool, close: bool) -> None:
        if self._stalled or reply.delay_s > 0:
            self._stalled.append((reply, head, close))
            if self._timer is None:
                self._schedule()
            return
        self._send(reply, head, close)

    def _schedule(self) -> None:
        reply = self._stalled[0][0]
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(reply.delay_s, self._release)

    def _release(self) -> None:
        """A stall ended: answer it, then every answer queued behind it up to the next stall."""
        self._timer = None
        reply, head, close = self._stalled.popleft()
        self._send(reply, head, close)
        while self._stalled and self._stalled[0][0].delay_s <= 0:
            self._send(*self._stalled.popleft())
        if self._stalled:
            self._schedule()

    def _send(self, reply: Reply, head: bool, close: bool) -> None:
        if reply is _OK and not head and not close:
            self._write(_OK_BYTES)
        else:
            self._write(_response(reply, head=head, close=close))
        if close and self._transport is not None:
            self._transport.close()

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _fail(self, status: int) -> None:
        self._closing = True
        self._write(_response(Reply(status=status), head=False, close=True))
        if self._transport is not None:
            self._transport.close()


def _dechunk(buffer: bytearray, start: int) -> tuple[bytes, int] | None:
    """A chunked body starting at ``start``: (body, bytes consumed), or None if incomplete."""
    chunks: list[bytes] = []
    at = start
    while True:
        eol = buffer.find(b"\r\n", at)
        if eol < 0:
            return None
        size = int(bytes(buffer[at:eol]).split(b";")[0].strip() or b"0", 16)
        at = eol + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n", at)  # no trailers expected: just the CRLF
            if trailer_end < 0:
                return None
            return b"".join(chunks), trailer_end + 2
        if len(buffer) < at + size + 2:
            return None
        chunks.append(bytes(buffer[at:at + size]))
        at += size + 2
