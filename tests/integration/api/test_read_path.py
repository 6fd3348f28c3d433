"""The attribute read path's own machinery, against real Redis: definitions cached per API
replica yet never stale (the registry version travels with every read), authentication on the
hot route, and ``reads.ReadConnections`` (its own sockets, one round trip per read)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection
from redis.exceptions import ResponseError

from processor.api.app import create_app
from processor.settings import Settings
from processor.state import reads, resp
from processor.state.tokens import TokenStore
from tests.support.state import with_redis

pytestmark = pytest.mark.integration

READ = "/api/v1/get-online-attributes"
GROUPS = "/api/v1/registry/attribute_groups/"


def group(name: str, *, published: bool = True) -> dict[str, Any]:
    return {"name": name, "version": 1, "owner": "me@example.com", "is_published": published,
            "attribute_key": {"name": "domain_userid"},
            "attributes": [{"name": "views", "type": "int64", "events": [], "aggregation": "counter"}]}  # fmt: skip


def read_body(name: str) -> dict[str, Any]:
    return {"attribute_keys": {"domain_userid": ["u1", "u2"]}, "attributes": [f"{name}_v1:views"]}


@pytest.fixture
def replicas(settings: Settings) -> Iterator[tuple[TestClient, TestClient]]:
    """Two API replicas on one Redis, both with a valid token."""
    token = with_redis(settings, lambda r: TokenStore(r).create("replicas"))[1]
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(settings), headers=headers) as a, \
            TestClient(create_app(settings), headers=headers) as b:  # fmt: skip
        yield a, b


def test_a_publish_on_one_replica_is_read_at_once_on_another(
    replicas: tuple[TestClient, TestClient],
) -> None:
    """Replica ``a`` caches definitions and request plans; every change made through ``b`` is
    seen by ``a``'s very next read: a new group (a cached refusal is re-checked), an
    unpublished one (a cached plan is dropped), a republished one."""
    a, b = replicas
    missing = a.post(READ, json=read_body("shop"))
    assert missing.status_code == 422
    assert missing.json() == {"detail": {"missing": ["shop_v1:views"]}}

    assert b.post(GROUPS, json=group("shop")).status_code == 201
    assert a.post(READ, json=read_body("shop")).json() == {
        "domain_userid": ["u1", "u2"], "views": [None, None]}  # fmt: skip
    assert a.post(READ, json=read_body("shop")).status_code == 200  # from the cached plan

    assert b.put(f"{GROUPS}shop/versions/1", json=group("shop", published=False)).status_code == 200
    assert a.post(READ, json=read_body("shop")).status_code == 422

    assert b.put(f"{GROUPS}shop/versions/1", json=group("shop")).status_code == 200
    assert a.post(READ, json=read_body("shop")).status_code == 200


def test_the_read_route_requires_a_token(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        missing = client.post(READ, json=read_body("shop"))
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        wrong = client.post(READ, json=read_body("shop"), headers={"Authorization": "Bearer sbx_x"})
        assert wrong.status_code == 401 and "sbx_x" not in wrong.text


def test_bad_bodies_are_refused_with_422(replicas: tuple[TestClient, TestClient]) -> None:
    a, _ = replicas
    for body in (b"{", b"[1]", b'{"attribute_keys": {}}', b'{"attribute_keys": {"k": []}, "service": "s"}',
                 b'{"attribute_keys": {"k": ["1"]}}', b'{"attribute_keys": {"k": ["1"]}, "attributes": [1]}'):  # fmt: skip
        response = a.post(READ, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 422, body
        assert "detail" in response.json()


async def _with_connections(settings: Settings, check: Any, redis: Redis | None = None) -> None:
    redis = redis or Redis.from_url(settings.redis_url)
    connections = reads.ReadConnections(redis)
    try:
        await check(redis, connections)
    finally:
        await connections.aclose()
        await redis.aclose()
        await redis.connection_pool.disconnect()


def test_read_connections_answer_like_redis_py(settings: Settings) -> None:
    """Replies in order, from the configured database; an error reply raises and leaves the
    connection usable; a pooled connection that died is replaced for the next read."""

    async def check(redis: Redis, connections: reads.ReadConnections) -> None:
        await redis.hset("h", mapping={"a": "1", "b": "2"})
        await redis.set("s", "x")
        hmget = resp.command("HMGET", "h", "a", "nope", "b")
        assert await connections.round_trip(hmget + resp.command("GET", "s"), 2) == [
            [b"1", None, b"2"], b"x"]  # fmt: skip
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await connections.round_trip(resp.command("HMGET", "s", "a") + hmget, 2)
        assert await connections.round_trip(hmget, 1) == [[b"1", None, b"2"]]
        (client_id,) = await connections.round_trip(resp.command("CLIENT", "ID"), 1)
        assert await redis.client_kill_filter(_id=str(client_id)) == 1
        assert await connections.round_trip(hmget, 1) == [[b"1", None, b"2"]]

    asyncio.run(_with_connections(settings, check))


def test_read_connections_recover_when_every_idle_connection_died(settings: Settings) -> None:
    """A Redis restart kills every idle connection at once: the next reads all succeed."""

    async def check(redis: Redis, connections: reads.ReadConnections) -> None:
        await redis.set("s", "x")
        get = resp.command("GET", "s")
        ids = resp.command("CLIENT", "ID")
        # Six concurrent reads leave six idle connections behind.
        opened = await asyncio.gather(*(connections.round_trip(ids, 1) for _ in range(6)))
        for (client_id,) in opened:
            await redis.client_kill_filter(_id=str(client_id))
        for _ in range(6):
            assert await connections.round_trip(get, 1) == [b"x"]

    asyncio.run(_with_connections(settings, check))


def test_a_chunked_body_over_the_limit_is_refused_with_413(settings: Settings) -> None:
    """A body without Content-Length is counted as it arrives, not buffered whole."""
    token = with_redis(settings, lambda r: TokenStore(r).create("reader"))[1]
    small = settings.model_copy(update={"api_max_body_bytes": 1024})
    with TestClient(create_app(small)) as client:
        response = client.post(
            READ, content=iter([b'{"attribute_keys": {"k": ["' + b"x" * 4096 + b'"]}}']),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert response.status_code == 413


def test_read_connections_fall_back_to_the_clients_pool(settings: Settings) -> None:
    """A connection class of the client's own (TLS, say) is used through its pool."""

    class Custom(Connection):
        pass

    async def check(redis: Redis, connections: reads.ReadConnections) -> None:
        await redis.hset("h", mapping={"a": "1"})
        hmget = resp.command("HMGET", "h", "a")
        assert await connections.round_trip(hmget + hmget, 2) == [[b"1"], [b"1"]]
        with pytest.raises(ResponseError):
            await connections.round_trip(resp.command("HMGET", "h") + hmget, 2)
        assert await connections.round_trip(hmget, 1) == [[b"1"]]

    pool = ConnectionPool.from_url(settings.redis_url, connection_class=Custom)
    asyncio.run(_with_connections(settings, check, Redis(connection_pool=pool)))
