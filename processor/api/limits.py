"""Reading request bodies under a size limit.

Endpoints that take raw bodies (the collectors, text/plain SegmentQL) read them through
:func:`read_body`, so an oversized request is refused with 413 before it is buffered whole,
whether it declares a Content-Length or streams chunks.
"""

from __future__ import annotations

from fastapi import HTTPException, Request, status


def body_limit(request: Request) -> int:
    """The configured limit (``SIGNALBOX_API_MAX_BODY_BYTES``) of the app serving ``request``."""
    return int(request.app.state.settings.api_max_body_bytes)


async def read_body(request: Request, limit: int | None = None) -> bytes:
    """The whole body, or HTTP 413 as soon as it is known to exceed ``limit`` bytes."""
    limit = body_limit(request) if limit is None else limit
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> HTTPException:
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE, f"request body exceeds the limit of {limit} bytes"
    )
