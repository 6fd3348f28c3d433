"""Tokens and the API-key -> JWT exchange, against real Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator

import jwt
import pytest
from fastapi.testclient import TestClient
from redis.asyncio import Redis

from processor.api import auth
from processor.api.app import create_app
from processor.api.auth import TOKEN_CACHE_S
from processor.settings import Settings
from processor.state.apikeys import ACCESS_TOKEN_TTL_S, ApiKeyStore
from processor.state.tokens import TokenStore
from tests.support.state import with_redis

pytestmark = pytest.mark.integration

EXCHANGE = "/api/msc/v1/organizations/org-1/credentials/v3/token"
PROTECTED = "/api/segment"


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings)
    if not any(getattr(r, "path", "") == EXCHANGE.replace("org-1", "{org_id}") for r in app.routes):
        app.include_router(auth.router)  # until app.py includes processor.api.auth.router
    with TestClient(app) as test_client:
        yield test_client


def exchange(client: TestClient, key_id: str, key: str):  # type: ignore[no-untyped-def]
    return client.get(EXCHANGE, headers={"X-API-Key-Id": key_id, "X-API-Key": key})


def test_key_exchange_gives_a_short_lived_jwt_the_api_accepts(settings: Settings, client: TestClient) -> None:
    info, key = with_redis(settings, lambda r: ApiKeyStore(r).create("svc"))
    response = exchange(client, info.id, key)
    assert response.status_code == 200
    token = response.json()["accessToken"]
    claims = jwt.decode(token, options={"verify_signature": False})  # what the Signals SDK does
    assert claims["sub"] == info.id and claims["org"] == "org-1"
    assert 0 < claims["exp"] - time.time() <= ACCESS_TOKEN_TTL_S
    assert client.get(PROTECTED, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get(PROTECTED, params={"access_token": token}).status_code == 200
    stored = with_redis(settings, lambda r: r.hgetall("sb:auth:apikeys"))
    assert key.encode() not in b"".join(stored.values())  # only the digest is kept


@pytest.mark.parametrize(("headers", "reason"), [
    ({}, "X-API-Key-Id and X-API-Key headers are required"),
    ({"X-API-Key-Id": "nobody", "X-API-Key": "sbk_x"}, "invalid API key id or API key"),
])
def test_key_exchange_refusals(client: TestClient, headers: dict[str, str], reason: str) -> None:
    response = client.get(EXCHANGE, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"detail": reason}


def test_wrong_key_and_revoked_key(settings: Settings, client: TestClient) -> None:
    info, key = with_redis(settings, lambda r: ApiKeyStore(r).create("svc"))
    assert exchange(client, info.id, key + "x").status_code == 401
    token = exchange(client, info.id, key).json()["accessToken"]
    assert with_redis(settings, lambda r: ApiKeyStore(r).revoke(info.id)) is True
    assert [k.id for k in with_redis(settings, lambda r: ApiKeyStore(r).list())] == []
    refused = client.get(PROTECTED, headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 401
    assert "revoked" in refused.json()["message"]
    assert exchange(client, info.id, key).status_code == 401


def test_expired_and_forged_tokens(settings: Settings, client: TestClient) -> None:
    info, key = with_redis(settings, lambda r: ApiKeyStore(r).create("svc"))
    old = with_redis(settings, lambda r: ApiKeyStore(r).issue_token(
        info.id, key, now_s=int(time.time()) - 2 * ACCESS_TOKEN_TTL_S))
    expired = client.get(PROTECTED, headers={"Authorization": f"Bearer {old}"})
    assert expired.status_code == 401 and expired.json()["message"] == "access token expired"
    assert expired.headers["www-authenticate"] == "Bearer"

    forged = jwt.encode({"iss": "signalbox", "sub": info.id, "iat": int(time.time()),
                         "exp": int(time.time()) + 60}, b"not-the-server-secret" * 2, algorithm="HS256")
    bad = client.get(PROTECTED, headers={"Authorization": f"Bearer {forged}"})
    assert bad.status_code == 401 and "invalid access token" in bad.json()["message"]
    unsigned = jwt.encode({"iss": "signalbox", "sub": info.id, "exp": int(time.time()) + 60},
                          key=None, algorithm="none")
    assert client.get(PROTECTED, headers={"Authorization": f"Bearer {unsigned}"}).status_code == 401


def test_missing_wrong_and_revoked_api_tokens(settings: Settings, client: TestClient) -> None:
    info, token = with_redis(settings, lambda r: TokenStore(r).create("ops"))
    missing = client.get(PROTECTED)
    assert missing.status_code == 401 and missing.json()["message"] == "missing API token"
    wrong = client.get(PROTECTED, headers={"Authorization": "Bearer sbx_wrong"})
    assert wrong.status_code == 401 and wrong.json()["message"] == "invalid API token"
    assert "sbx_wrong" not in wrong.text
    assert client.get(PROTECTED, headers={"Authorization": token}).status_code == 200
    assert client.get(PROTECTED, params={"key": token}).status_code == 200
    with_redis(settings, lambda r: TokenStore(r).revoke(info.id))
    # Verified tokens are trusted for TOKEN_CACHE_S without a Redis lookup: the revocation
    # takes effect once that has passed.
    time.sleep(TOKEN_CACHE_S + 0.1)
    assert client.get(PROTECTED, headers={"Authorization": token}).status_code == 401


def test_one_signing_secret_across_replicas(settings: Settings) -> None:
    """Two stores (two API processes) issue and verify each other's tokens."""
    async def scenario(redis: Redis) -> str:
        info, key = await ApiKeyStore(redis).create("svc")
        other = Redis.from_url(settings.redis_url)
        try:
            token = await ApiKeyStore(other).issue_token(info.id, key)
        finally:
            await other.aclose()
        return (await ApiKeyStore(redis).verify_token(token)).id
    assert with_redis(settings, scenario)


def test_a_verified_access_token_is_trusted_for_a_second_and_never_past_its_expiry(
    settings: Settings, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    info, key = with_redis(settings, lambda r: ApiKeyStore(r).create("svc"))
    token = exchange(client, info.id, key).json()["accessToken"]
    assert client.get(PROTECTED, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    with_redis(settings, lambda r: ApiKeyStore(r).revoke(info.id))
    time.sleep(TOKEN_CACHE_S + 0.1)  # the revocation holds once the cached verdict is stale
    refused = client.get(PROTECTED, headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 401 and "revoked" in refused.json()["message"]

    monkeypatch.setattr(auth, "TOKEN_CACHE_S", 30.0)  # the expiry must cut a long trust short
    info, key = with_redis(settings, lambda r: ApiKeyStore(r).create("svc2"))
    time.sleep(1 - time.time() % 1)  # just after a second: exp (whole seconds) is ~1 s away
    short = with_redis(settings, lambda r: ApiKeyStore(r).issue_token(
        info.id, key, now_s=int(time.time()) + 2 - ACCESS_TOKEN_TTL_S))
    assert client.get(PROTECTED, headers={"Authorization": f"Bearer {short}"}).status_code == 200
    time.sleep(ApiKeyStore.expiry(short) - time.time() + 0.2)
    expired = client.get(PROTECTED, headers={"Authorization": f"Bearer {short}"})
    assert expired.status_code == 401 and expired.json()["message"] == "access token expired"
