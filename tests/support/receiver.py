"""A real HTTP server on loopback that records what webhook senders POST to it.

``WebhookReceiver`` runs a stdlib ``ThreadingHTTPServer`` (HTTP/1.1, keep-alive, so pooled
clients behave as they do against real targets) on ``127.0.0.1`` and a free port, in a
background thread. Every request is recorded *before* it is answered (method, path with query,
headers, raw body, parsed JSON, receive time), so a test can assert on a request whose answer
is a stall or an error.

How it answers is the *behaviour*: a fixed status, or a function
``(index, request) -> status | (status, headers, delay_s) | Reply`` that can script 500s, 429s
with ``Retry-After``, or stalls (``delay_s``). Stalls end early when the receiver closes, so a
test never waits for a stalled handler at teardown.

    with WebhookReceiver() as receiver:
        ...post to receiver.url...
        got = receiver.wait_for(3, timeout=5)
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the receiver saw it. ``headers`` keys are lower-cased."""

    index: int
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    received_at: float  # time.time() when the body had been read
    raw_headers: tuple[tuple[str, str], ...] = ()

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
    answers on its own threads. ``behaviour`` may be changed at any time with
    ``set_behaviour``; request indexes count from 0 since start (or the last ``clear``).
    """

    def __init__(self, behaviour: Behaviour = 200, *, host: str = "127.0.0.1") -> None:
        self._behaviour = behaviour
        self._host = host
        self._records: list[ReceivedRequest] = []
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle ---------------------------------------------------------------------------
    def start(self) -> WebhookReceiver:
        server = _Server((self._host, 0), _handler_class(self))
        server.daemon_threads = True
        server.block_on_close = False  # stalled handlers are released by _closing instead
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="webhook-receiver", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # what tests use ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:45123/``; any path under it is accepted."""
        if self._server is None:
            raise RuntimeError("receiver not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/"

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._cond:
            return list(self._records)

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

    # called by handler threads -----------------------------------------------------------
    def _record(self, method: str, path: str, raw_headers: list[tuple[str, str]],
                body: bytes) -> tuple[ReceivedRequest, Behaviour]:
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None
        with self._cond:
            request = ReceivedRequest(
                index=len(self._records), method=method, path=path,
                headers={k.lower(): v for k, v in raw_headers}, body=body, json=parsed,
                received_at=time.time(), raw_headers=tuple(raw_headers),
            )
            self._records.append(request)
            self._cond.notify_all()
            return request, self._behaviour

    def _answer(self, request: ReceivedRequest, behaviour: Behaviour) -> Reply:
        if isinstance(behaviour, int):
            return Reply(status=behaviour)
        return _as_reply(behaviour(request.index, request))

    def _stall(self, delay_s: float) -> None:
        if delay_s > 0:
            self._closing.wait(delay_s)


class _Server(ThreadingHTTPServer):
    # The stdlib default backlog (5) resets connections a pooled client opens in a burst;
    # those resets looked like a failing target and sent deliveries to the retry path.
    request_queue_size = 256


def _handler_class(receiver: WebhookReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # Headers and body go out in separate writes; without NODELAY each response waits
            # on the client's delayed ACK (~40 ms), capping a keep-alive connection at ~25/s.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _handle(self) -> None:
            body = self._read_body()
            request, behaviour = receiver._record(self.command, self.path,
                                                  list(self.headers.items()), body)
            try:
                reply = receiver._answer(request, behaviour)
            except Exception as exc:  # a broken script must show up in the test, not hang it
                reply = Reply(status=599, body=f"behaviour raised {exc!r}".encode())
            receiver._stall(reply.delay_s)
            try:
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if reply.body and self.command != "HEAD":
                    self.wfile.write(reply.body)
            except OSError:
                self.close_connection = True  # the client gave up (timeout); nothing to answer

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks: list[bytes] = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()  # trailing CRLF after the last chunk
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            return  # keep test output clean; requests are recorded instead

    return Handler
