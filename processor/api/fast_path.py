"""The hot read, ``POST /api/v1/get-online-attributes``, answered in plain ASGI.

FastAPI serves the read like any route (documented in /openapi.json, errors as JSON), but its
routing, middleware, ``Request`` and ``Response`` objects cost about as much server time as
the read itself. :func:`answer` serves the common case before them: a token in the
``Authorization`` header, a body within the limit that parses, a plan, one Redis round trip,
then the 200 sent as ``Response`` would send it. Everything else — a token in the query
string, any refusal (401, 404, 413, 422), any error — is handed to FastAPI with the messages
received so far replayed, before anything was sent: the route answers it again from the
start, so every answer that is not a plain 200 is the route's own, byte for byte.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.datastructures import State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from processor.api import profiles
from processor.api.auth import header_token, verify_token

PATH = profiles.router.prefix + profiles.PATH
_JSON = b"application/json"


def serves(scope: Scope) -> bool:
    """Whether ``scope`` is a request :func:`answer` may take."""
    return (scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "POST"
            and not scope.get("root_path"))  # fmt: skip


async def answer(state: State, scope: Scope, receive: Receive, send: Send, fallback: ASGIApp) -> None:
    """Answer the read of ``scope`` (:func:`serves`) for the app whose state is ``state``, or
    let ``fallback`` (the FastAPI app) answer it."""
    received: list[Message] = []
    try:
        payload = await _payload(state, scope, receive, received)
    except Exception:  # the route meets it again and answers as it always has
        payload = None
    if payload is None:
        await fallback(scope, _replaying(received, receive), send)
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"%d" % len(payload)), (b"content-type", _JSON)]})  # fmt: skip
    await send({"type": "http.response.body", "body": payload})


async def _payload(
    state: State, scope: Scope, receive: Receive, received: list[Message]
) -> bytes | None:
    """The 200 body of the read, None when the route should answer, or the route's error.
    The messages taken from ``receive`` are appended to ``received``."""
    limit = state.settings.api_max_body_bytes
    authorization: bytes | None = None
    for name, value in scope["headers"]:
        if name == b"content-length":
            if not value.isdigit() or int(value) > limit:
                return None
        elif name == b"authorization" and authorization is None:
            authorization = value  # the first, as ``Request.headers.get`` takes
    token = header_token(authorization.decode("latin-1")) if authorization else ""
    if not token:
        return None  # maybe in the query string
    await verify_token(state.redis, token)
    raw = await _body(receive, received, limit)
    return None if raw is None else await profiles.online_attributes(state, raw)


async def _body(receive: Receive, received: list[Message], limit: int) -> bytes | None:
    """The request body as ``limits.read_body`` reads it; None when it does not end within
    ``limit`` bytes (or the client left), for the route to answer."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        received.append(message)
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replaying(received: list[Message], receive: Receive) -> Callable[[], Awaitable[Message]]:
    """``receive`` as it was before ``received`` was taken from it."""
    pending = iter(received)

    async def replaying() -> Message:
        return next(pending, None) or await receive()

    return replaying
