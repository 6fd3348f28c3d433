"""How Signals registry and profile errors become HTTP responses (signals-api §0).

The SDK treats only 200/201/202 with a JSON body as success and raises ``SignalsAPIError`` on
anything else; its upsert falls back to PUT on **400 only**. So:

    DefinitionExists   -> 400 {"detail": "... already exists"}   (SDK then PUTs)
    DefinitionNotFound -> 404 {"detail": "... not found"}
    LifecycleError     -> 409 {"detail": "... unpublish it first"}
    DefinitionError    -> 422 {"detail": "invalid AttributeGroup: ..."}  (no PUT retry)

Routers cannot install exception handlers, so routes wrap their work in ``translated()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import HTTPException, Request

from processor.domain.lifecycle import LifecycleError
from processor.errors import DefinitionError
from processor.publishing import DefinitionExists, DefinitionNotFound

_STATUS: tuple[tuple[type[DefinitionError], int], ...] = (
    (DefinitionExists, 400),
    (DefinitionNotFound, 404),
    (LifecycleError, 409),
    (DefinitionError, 422),
)


def status_of(exc: DefinitionError) -> int:
    return next(code for kind, code in _STATUS if isinstance(exc, kind))


@contextmanager
def translated() -> Iterator[None]:
    """Re-raise a ``DefinitionError`` as the ``HTTPException`` the contract asks for."""
    try:
        yield
    except DefinitionError as exc:
        raise HTTPException(status_of(exc), str(exc)) from None


async def json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or 422 (FastAPI's own body parsing would accept any
    JSON value and give pydantic errors for the wrong model)."""
    try:
        body = await request.json()
    except ValueError:
        raise HTTPException(422, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(422, "the request body must be a JSON object")
    return body
