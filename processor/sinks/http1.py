"""``Http1Client``: the small asyncio HTTP/1.1 client the webhook sink POSTs with.

Why not httpx: a webhook subscription is one POST per transition, so the client's cost per
request bounds a lane. Measured on the project's 2-core box against the asyncio test receiver
in another process (64 keep-alive connections, 1 KB JSON bodies): httpx 0.1-0.6k requests/s,
aiohttp ~2.7-3.4k/s, a bare ``asyncio.Protocol`` client ~7k/s. This module is that bare client
made safe to use, and nothing more:

- ``POST`` only, with a ``bytes`` body sent with ``Content-Length``; the caller passes its
  header block pre-encoded (``encode_headers``), so a subscription's static headers are
  serialised once, not per request;
- ``http`` and ``https`` (stdlib ``ssl``, default context: certificates and host names are
  verified); no proxies, redirects (a 3xx is returned as it is), cookies or compression;
- keep-alive: idle connections are pooled per origin (scheme, host, port) and reused newest
  first; a connection goes back to the pool only after a complete answer that allows reuse;
- answers with ``Content-Length``, ``chunked`` or read-until-close bodies; interim ``1xx``
  answers are skipped; an answer's head over 64 KiB or body over 8 MiB is a ``ProtocolError``.

Errors are ``HttpError`` subclasses: ``ConnectFailed`` (DNS, TCP or TLS), ``ConnectionLost``
(closed or reset before the whole answer arrived), ``ProtocolError`` (not an HTTP/1.x answer);
and ``TimeoutError`` when ``post``'s ``timeout`` (connect + send + answer) passes. The timeout
is a timer on the connection that fails the pending answer, not a task cancellation: Python
3.11's ``asyncio.timeout`` can leave a cancellation pending on the task when the answer and the
deadline coincide, which then surfaces at an unrelated ``await``. A cancelled or timed-out
request's connection is closed, never reused.

Two ways to send: ``await post(...)``, and ``post_soon(..., on_done)``, which writes the request
at once on an idle pooled connection and hands the answer to ``on_done`` from the connection's
own callback (no task, no future: a webhook lane sends thousands of requests a second this way);
without an idle connection it runs ``post`` in a task and calls ``on_done`` from there. Each
connection keeps one deadline timer, re-armed lazily when it fires, instead of scheduling and
cancelling a timer per request.

A request sent on a *reused* connection that the server closed before answering a single byte
(its keep-alive timeout raced our reuse) is sent again on a fresh connection, as browsers and
httpx do; a receiver may therefore, rarely, see a request twice (webhooks carry a stable
``webhook-id`` for exactly that).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from processor.domain.subscriptions import HEADER_NAME, HEADER_VALUE

log = logging.getLogger(__name__)

_MAX_HEAD = 64 * 1024
_MAX_BODY = 8 * 1024 * 1024
_MAX_IDLE_PER_ORIGIN = 512
_SAFE_PATH = "/%:@!$&'()*+,;=-._~?"

Origin = tuple[str, str, int]


class HttpError(Exception):
    """The request failed before a complete answer arrived."""


class ConnectFailed(HttpError):
    pass


class ConnectionLost(HttpError):
    def __init__(self, message: str, *, answered: bool = False) -> None:
        super().__init__(message)
        self.answered = answered  # some bytes of an answer had arrived


class ProtocolError(HttpError):
    pass


class PeerRefused(HttpError):
    """The connection reached an address the client's ``check_peer`` refuses."""


@dataclass(slots=True)  # not frozen: one is built per request, and frozen fields cost setattr calls
class Response:
    status: int
    headers: dict[str, str]  # names lower-cased; a repeated header keeps its last value
    body: bytes
    keep_alive: bool = True

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed URL: where to connect and the first lines of every request to it."""

    origin: Origin
    tls: bool
    host: str
    port: int
    head: bytes  # b"POST /path?query HTTP/1.1\r\nHost: ...\r\n"


@functools.lru_cache(maxsize=1024)
def target(url: str) -> Target:
    """Parse an ``http(s)`` URL; ``ValueError`` for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"only http and https URLs are supported, not {parts.scheme!r}")
    if not parts.hostname:
        raise ValueError(f"URL {url!r} has no host")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    host = parts.hostname
    host_header = f"[{host}]" if ":" in host else host
    if port != (443 if tls else 80):
        host_header += f":{port}"
    path = quote(parts.path or "/", safe=_SAFE_PATH)
    if parts.query:
        path += "?" + quote(parts.query, safe=_SAFE_PATH)
    head = f"POST {path} HTTP/1.1\r\nHost: {host_header}\r\n".encode("ascii")
    return Target(origin=(parts.scheme, host, port), tls=tls, host=host, port=port, head=head)


def encode_headers(headers: Mapping[str, str]) -> bytes:
    """``Name: value\\r\\n`` lines; ``ValueError`` for a name or value HTTP does not allow
    (a CR or LF would let a value inject headers)."""
    lines = []
    for name, value in headers.items():
        if not HEADER_NAME.fullmatch(name) or not HEADER_VALUE.fullmatch(value):
            raise ValueError(f"header {name!r} is not a valid HTTP header")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1")


class Http1Client:
    """Pooled HTTP/1.1 keep-alive connections; see the module docstring."""

    def __init__(self, *, max_idle_per_origin: int = _MAX_IDLE_PER_ORIGIN,
                 ssl_context: ssl.SSLContext | None = None,
                 check_peer: Callable[[str], str | None] | None = None) -> None:
        self._max_idle = max_idle_per_origin
        self._ssl = ssl_context
        # address -> why it may not be called (None: it may). Checked on the address each new
        # connection actually reached, so a name that re-resolves elsewhere is caught.
        self._check_peer = check_peer
        self._idle: dict[Origin, list[_Connection]] = {}
        self._all: set[_Connection] = set()
        self._tasks: set[asyncio.Future[None]] = set()  # post_soon's requests run in tasks
        self._closed = False

    @property
    def open_connections(self) -> int:
        return len(self._all)

    async def post(self, url: str | Target, headers: bytes, body: bytes, *,
                   timeout: float | None = None) -> Response:
        """POST ``body`` with the pre-encoded ``headers`` (``encode_headers``); the client adds
        ``Host`` and ``Content-Length``. Raises ``HttpError``, or ``TimeoutError`` after
        ``timeout`` seconds; never follows redirects."""
        if self._closed:
            raise HttpError("the client is closed")
        where = target(url) if isinstance(url, str) else url
        data = b"".join((where.head, headers, b"Content-Length: %d\r\n\r\n" % len(body), body))
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        return await self._exchange(where, data, deadline)

    def post_soon(self, where: Target, headers: bytes, body: bytes, *, timeout: float,
                  on_done: Callable[[Response | BaseException], None]) -> None:
        """Like ``post``, but ``on_done(response or error)`` is called once with what ``post``
        would return or raise, never before this returns. With an idle connection the request
        is written now and ``on_done`` runs in that connection's callback; otherwise ``post``
        runs in a task. ``on_done`` must not raise (what it raises is logged)."""
        loop = asyncio.get_running_loop()
        data = b"".join((where.head, headers, b"Content-Length: %d\r\n\r\n" % len(body), body))
        deadline = loop.time() + timeout
        conn = None if self._closed else self._take_idle(where.origin)
        if conn is None:
            self._in_task(where, data, deadline, on_done)
        else:
            self._send_on(conn, where, data, deadline, on_done)

    def _send_on(self, conn: _Connection, where: Target, data: bytes, deadline: float,
                 on_done: Callable[[Response | BaseException], None]) -> None:
        """``post_soon`` on a reused connection: the answer is settled in its callback."""

        def answered(answer: Response | BaseException) -> None:
            if isinstance(answer, Response):
                if answer.keep_alive and conn.reusable:
                    self._release(where.origin, conn)
                else:
                    self._discard(conn)
            else:
                self._discard(conn, abort=True)
                if isinstance(answer, ConnectionLost) and not answer.answered:
                    # a stale keep-alive connection: send again on another one
                    again = None if self._closed else self._take_idle(where.origin)
                    if again is None:
                        self._in_task(where, data, deadline, on_done)
                    else:
                        self._send_on(again, where, data, deadline, on_done)
                    return
            _call(on_done, answer)

        try:
            conn.send(data, deadline, answered)
        except ConnectionLost:
            self._discard(conn, abort=True)
            self._in_task(where, data, deadline, on_done)

    def _in_task(self, where: Target, data: bytes, deadline: float,
                 on_done: Callable[[Response | BaseException], None]) -> None:
        async def run() -> None:
            try:
                if self._closed:
                    raise HttpError("the client is closed")
                answer: Response | BaseException = await self._exchange(where, data, deadline)
            except BaseException as exc:  # handed over; a cancellation is re-raised too
                _call(on_done, exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return
            _call(on_done, answer)

        task = asyncio.ensure_future(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _exchange(self, where: Target, data: bytes, deadline: float | None) -> Response:
        while True:
            conn = self._take_idle(where.origin)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(where, deadline)
            try:
                response = await conn.request(data, deadline)
            except ConnectionLost as exc:
                self._discard(conn, abort=True)
                if reused and not exc.answered:
                    continue  # a stale keep-alive connection: send again on another one
                raise
            except BaseException:  # timeout, cancellation, protocol error: state unknown
                self._discard(conn, abort=True)
                raise
            if response.keep_alive and conn.reusable:
                self._release(where.origin, conn)
            else:
                self._discard(conn)
            return response

    async def aclose(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        self._idle.clear()

    def _take_idle(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if conn.reusable:
                return conn
            self._all.discard(conn)
        return None

    def _release(self, origin: Origin, conn: _Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        if len(idle) >= self._max_idle or self._closed:
            self._discard(conn)
        else:
            idle.append(conn)

    def _discard(self, conn: _Connection, *, abort: bool = False) -> None:
        conn.close(abort=abort)
        self._all.discard(conn)

    async def _connect(self, where: Target, deadline: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        context: ssl.SSLContext | None = None
        if where.tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        connecting = loop.create_connection(
            _Connection, where.host, where.port, ssl=context,
            server_hostname=where.host if context is not None else None)
        try:
            if deadline is None:
                _, conn = await connecting
            else:  # new connections are rare (keep-alive): wait_for's task is affordable here
                _, conn = await asyncio.wait_for(connecting, max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise
        except (OSError, ssl.SSLError, UnicodeError) as exc:
            raise ConnectFailed(f"cannot connect to {where.host}:{where.port}: "
                                f"{type(exc).__name__}: {exc}") from None
        if self._check_peer is not None:
            peer = conn.peer_address()
            refused = "no peer address" if peer is None else self._check_peer(peer)
            if refused is not None:
                conn.close(abort=True)
                raise PeerRefused(f"{where.host} reached {peer}: {refused}")
        self._all.add(conn)
        return conn


class _Connection(asyncio.Protocol):
    """One connection; ``send`` writes one request and hands its complete answer (or the
    error) to a callback; ``request`` awaits it."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._on_answer: Callable[[Response | BaseException], None] | None = None
        self._buffer = bytearray()
        self._head: tuple[int, dict[str, str], bool] | None = None  # status, headers, keep-alive
        self._body_mode = ""  # "length", "chunked" or "close"
        self._dechunker = _Dechunker()
        self._length = 0
        self._lost = False
        # The request in flight must be answered by ``_deadline``. One timer per connection,
        # armed at a deadline and re-armed when it fires early (the connection was reused
        # meanwhile), so a request costs no timer of its own.
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    @property
    def reusable(self) -> bool:
        return (not self._lost and self._transport is not None
                and not self._transport.is_closing() and self._on_answer is None)

    def peer_address(self) -> str | None:
        peer = None if self._transport is None else self._transport.get_extra_info("peername")
        return None if not peer else str(peer[0])

    def close(self, *, abort: bool = False) -> None:
        if self._transport is not None:
            if abort:
                self._transport.abort()
            else:
                self._transport.close()

    def send(self, data: bytes, deadline: float | None,
             on_answer: Callable[[Response | BaseException], None]) -> None:
        """Write one request; ``on_answer`` gets its answer or error once, from a callback
        (the connection is idle again by then, so ``on_answer`` may send the next one)."""
        assert self._transport is not None and self._on_answer is None
        if self._lost or self._transport.is_closing():
            raise ConnectionLost("the connection was closed")
        self._on_answer = on_answer
        self._deadline = deadline
        if deadline is not None and (self._timer is None or self._timer_at > deadline):
            self._arm(deadline)
        self._buffer.clear()
        self._head = None
        self._transport.write(data)

    async def request(self, data: bytes, deadline: float | None = None) -> Response:
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.send(data, deadline, functools.partial(_resolve, waiter))
        return await waiter

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = asyncio.get_running_loop().call_at(at, self._check_deadline)

    def _check_deadline(self) -> None:
        self._timer = None
        deadline = self._deadline
        if self._on_answer is None or deadline is None:
            return
        if deadline <= self._timer_at:
            self._lost = True
            self._finish(TimeoutError("no complete answer in time"))
        else:
            self._arm(deadline)

    def _finish(self, answer: Response | BaseException) -> None:
        on_answer = self._on_answer
        if on_answer is not None:
            self._on_answer = None
            self._deadline = None
            on_answer(answer)

    # asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._on_answer is None:
            self._lost = True  # bytes nobody asked for: this connection cannot be trusted
            self.close(abort=True)
            return
        self._buffer += data
        try:
            response = self._parse()
        except ProtocolError as exc:
            self._lost = True
            self._finish(exc)
            return
        if response is not None:
            if self._buffer:  # more than one answer to one request
                self._lost = True
            self._finish(response)

    def eof_received(self) -> bool:
        self._finish_at_close()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish_at_close()
        self._lost = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._on_answer is not None:
            reason = f"{type(exc).__name__}: {exc}" if exc else "closed by the server"
            self._finish(ConnectionLost(f"connection lost before the answer ({reason})",
                                        answered=bool(self._buffer or self._head)))

    # parsing ------------------------------------------------------------------------------
    def _finish_at_close(self) -> None:
        """A read-until-close body ends with the connection."""
        if self._on_answer is not None and self._head is not None and self._body_mode == "close":
            status, headers, _ = self._head
            self._lost = True
            self._finish(Response(status, headers, bytes(self._buffer), keep_alive=False))

    def _parse(self) -> Response | None:
        buffer = self._buffer
        while self._head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > _MAX_HEAD:
                    raise ProtocolError("the answer's head is too large")
                return None
            status, headers, keep_alive = _parse_head(bytes(buffer[:end]))
            del buffer[:end + 4]
            if 100 <= status < 200:
                continue  # interim answer (100 Continue...): the real one follows
            self._head = (status, headers, keep_alive)
            if status in (204, 304):
                self._body_mode, self._length = "length", 0
            elif "chunked" in headers.get("transfer-encoding", "").lower():
                self._body_mode = "chunked"
                self._dechunker = _Dechunker()
            elif "content-length" in headers:
                try:
                    self._length = int(headers["content-length"])
                except ValueError:
                    raise ProtocolError("invalid Content-Length") from None
                if not 0 <= self._length <= _MAX_BODY:
                    raise ProtocolError("invalid or too large Content-Length")
                self._body_mode = "length"
            else:
                self._body_mode = "close"
        status, headers, keep_alive = self._head
        if self._body_mode == "length":
            if len(buffer) < self._length:
                return None
            body = bytes(buffer[:self._length])
            del buffer[:self._length]
            return Response(status, headers, body, keep_alive)
        if self._body_mode == "chunked":
            whole = self._dechunker.feed(buffer)
            return None if whole is None else Response(status, headers, whole, keep_alive)
        if len(buffer) > _MAX_BODY:
            raise ProtocolError("the answer's body is too large")
        return None  # read until close


def _resolve(waiter: asyncio.Future[Response], answer: Response | BaseException) -> None:
    if waiter.done():  # the awaiting task was cancelled
        return
    if isinstance(answer, BaseException):
        waiter.set_exception(answer)
    else:
        waiter.set_result(answer)


def _call(on_done: Callable[[Response | BaseException], None],
          answer: Response | BaseException) -> None:
    try:
        on_done(answer)
    except Exception:  # a broken callback must not take the connection's loop callback down
        log.exception("post_soon callback failed")


def _parse_head(head: bytes) -> tuple[int, dict[str, str], bool]:
    status_line, _, rest = head.decode("latin-1").partition("\r\n")
    parts = status_line.split(" ", 2)
    if (len(parts) < 2 or not parts[0].startswith("HTTP/1.") or len(parts[1]) != 3
            or not parts[1].isascii() or not parts[1].isdigit()):
        raise ProtocolError(f"not an HTTP/1.x answer: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    if rest:
        for line in rest.split("\r\n"):
            name, sep, value = line.partition(":")
            if not sep:
                raise ProtocolError(f"malformed header line: {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
    connection = headers.get("connection", "").lower()
    keep_alive = "keep-alive" in connection if parts[0] == "HTTP/1.0" else "close" not in connection
    return int(parts[1]), headers, keep_alive


class _Dechunker:
    """A chunked body, decoded as it arrives: each ``feed`` consumes the complete parts at the
    start of the buffer, so a body in many small pieces is not re-read from its first byte each
    time, and nothing unbounded (a size line without end, endless trailers) is kept."""

    _MAX_LINE = 4096  # a chunk-size line (with extensions) or one trailer line
    _HEX = frozenset(b"0123456789abcdefABCDEF")

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._total = 0
        self._size: int | None = None  # the chunk whose data is awaited
        self._trailers = -1  # bytes of trailer lines read; -1 until the last chunk

    def feed(self, buffer: bytearray) -> bytes | None:
        """The whole body once it is complete, else None (what was used is removed)."""
        while True:
            if self._size is not None:
                size = self._size
                if len(buffer) < size + 2:
                    return None
                if buffer[size:size + 2] != b"\r\n":
                    raise ProtocolError("chunk data not followed by CRLF")
                self._parts.append(bytes(buffer[:size]))
                del buffer[:size + 2]
                self._size = None
            eol = buffer.find(b"\r\n", 0, self._MAX_LINE + 2)
            if eol < 0:
                if len(buffer) > self._MAX_LINE:
                    raise ProtocolError("chunk-size or trailer line too long")
                return None
            line = bytes(buffer[:eol])
            del buffer[:eol + 2]
            if self._trailers >= 0:
                if not line:
                    return b"".join(self._parts)
                self._trailers += eol + 2
                if self._trailers > _MAX_HEAD:
                    raise ProtocolError("the answer's trailers are too large")
                continue
            digits = line.split(b";")[0].strip()
            if not digits or not self._HEX.issuperset(digits):
                raise ProtocolError("invalid chunk size")
            size = int(digits, 16)
            self._total += size
            if self._total > _MAX_BODY:
                raise ProtocolError("the answer's body is too large")
            if size == 0:
                self._trailers = 0
            else:
                self._size = size
