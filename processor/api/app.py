"""The FastAPI application. ``processor api`` serves ``create_app()`` with uvicorn."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import JSONResponse
from redis.asyncio import Redis
from starlette.types import ASGIApp, Receive, Scope, Send

from processor.api import auth, collector, fast_path, lytics, profiles, registry_routes, testing
from processor.api.auth import require_token
from processor.domain.transitions import EntityRef
from processor.settings import Settings, get_settings
from processor.state.entities import EntityStore
from processor.state.reads import ReadConnections
from processor.state.registry import Registry


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.redis = Redis.from_url(settings.redis_url)
        app.state.read_connections = ReadConnections(app.state.redis)  # sockets of the reads
        app.state.settings = settings
        # Everything loaded so far (FastAPI, pydantic, the routes) lives as long as the process:
        # keep it out of the cyclic collector's full passes, which otherwise show in the tail.
        gc.freeze()
        try:
            yield
        finally:
            await app.state.read_connections.aclose()
            await app.state.redis.aclose()

    app = SignalboxAPI(title="Signalbox", version="0.1.0", lifespan=lifespan, redirect_slashes=False)
    # The Profiles Store reads first: routes are matched in order, and they are the hot path.
    for module in (profiles, auth, registry_routes, collector, lytics, testing):
        app.include_router(module.router)

    app.add_middleware(DeclaredBodyLimit, limit=settings.api_max_body_bytes)

    @app.get("/health-all")
    async def health() -> dict[str, Any]:
        await app.state.redis.ping()
        return {"status": "ok", "registry_version": await Registry(app.state.redis).version()}

    @app.get("/api/entity/{table}/{field}/{value}", dependencies=[Depends(require_token)])
    async def entity(table: str, field: str, value: str) -> dict[str, Any]:
        """Lytics-style entity lookup: profile fields and segment slugs of one entity."""
        if table != "user":
            raise HTTPException(404, f"unknown table {table!r}")
        ref = EntityRef(field, value)
        state = (await EntityStore(app.state.redis).read([ref]))[ref]
        if not state.profile and not state.members:
            raise HTTPException(404, f"no entity {field}={value}")
        segments = await Registry(app.state.redis).all("segments")
        slugs = sorted(doc["slug_name"] for sid, doc in segments.items() if state.members.get(sid))
        data = state.profile_values() | {"segments": slugs}
        return {"status": 200, "message": "success", "data": data}

    return app


class SignalboxAPI(FastAPI):
    """The FastAPI app with the hot read answered in front of it, in plain ASGI
    (``fast_path``), falling back to the app's own route for anything but a plain 200."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if fast_path.serves(scope) and not self.root_path:
            await fast_path.answer(self.state, scope, receive, send, super().__call__)
        else:
            await super().__call__(scope, receive, send)


class DeclaredBodyLimit:
    """Refuse a declared body over the limit with 413 before it is read (the collector also
    bounds chunked bodies while reading, see ``limits.read_body``). Plain ASGI rather than
    ``@app.middleware("http")``, which would run every request through an extra task."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"content-length":
                    if value.isdigit() and int(value) > self.limit:
                        detail = f"request body of {value.decode()} bytes exceeds {self.limit}"
                        await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
                        return
                    break
        await self.app(scope, receive, send)
