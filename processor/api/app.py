"""The FastAPI application. ``processor api`` serves ``create_app()`` with uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from redis.asyncio import Redis

from processor.api import auth, collector, lytics, profiles, registry_routes, testing
from processor.api.auth import require_token
from processor.domain.transitions import EntityRef
from processor.settings import Settings, get_settings
from processor.state.entities import EntityStore
from processor.state.registry import Registry


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.redis = Redis.from_url(settings.redis_url)
        app.state.settings = settings
        try:
            yield
        finally:
            await app.state.redis.aclose()

    app = FastAPI(title="Signalbox", version="0.1.0", lifespan=lifespan, redirect_slashes=False)
    for module in (auth, registry_routes, profiles, collector, lytics, testing):
        app.include_router(module.router)

    @app.middleware("http")
    async def limit_declared_body(request: Request, call_next: Any) -> Any:
        """Refuse a declared body over the limit before reading it (the collector also
        bounds chunked bodies while reading, see ``limits.read_body``)."""
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > settings.api_max_body_bytes:
            return JSONResponse(
                {"detail": f"request body of {length} bytes exceeds {settings.api_max_body_bytes}"},
                status_code=413,
            )
        return await call_next(request)

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
