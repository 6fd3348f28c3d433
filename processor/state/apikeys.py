"""API keys for service clients, exchanged for short-lived JWT access tokens.

The exchange mirrors the Snowplow console endpoint the Signals SDK's "bdp" mode calls
(signals-api.md §0): the client sends an API key id and the key, and gets
``{"accessToken": "<JWT>"}``; it then sends ``Authorization: Bearer <JWT>`` until ``exp``.

- A key is shown once, at creation; Redis keeps only its SHA-256 digest (keys are 256 random
  bits, so a fast hash is enough: there is nothing to brute-force).
- Access tokens are HS256 JWTs signed with a server secret that lives in Redis (created on first
  use with SET NX, so every API replica signs and verifies with the same one). Claims: ``iss``,
  ``sub`` (the key id), ``org``, ``iat``, ``exp``.
- Revoking a key invalidates its tokens at once: verification checks that the key still exists.
"""

from __future__ import annotations

import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
import orjson
from redis.asyncio import Redis

from processor.state import keys
from processor.state.tokens import secret_digest

KEY_PREFIX = "sbk_"
ISSUER = "signalbox"
ACCESS_TOKEN_TTL_S = 900


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    id: str
    name: str
    created_ms: int


class AccessTokenError(Exception):
    """An access token or key pair that must be refused; ``reason`` is safe to return."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def looks_like_jwt(token: str) -> bool:
    """JWTs are three base64url parts whose header starts ``{"`` (``eyJ``); API tokens never do."""
    return token.startswith("eyJ") and token.count(".") == 2


class ApiKeyStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def create(self, name: str) -> tuple[ApiKeyInfo, str]:
        """Create a key; return its info (``id`` is the key id) and the key, the only time it exists."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        info = ApiKeyInfo(id=str(uuid.uuid4()), name=name, created_ms=time.time_ns() // 10**6)
        record = {"id": info.id, "name": name, "created_ms": info.created_ms, "digest": secret_digest(key)}
        await self._redis.hset(keys.API_KEYS, info.id, orjson.dumps(record))
        return info, key

    async def list(self) -> list[ApiKeyInfo]:
        raw = await self._redis.hgetall(keys.API_KEYS)
        return sorted((_info(orjson.loads(v)) for v in raw.values()), key=lambda k: k.created_ms)

    async def revoke(self, key_id: str) -> bool:
        return bool(await self._redis.hdel(keys.API_KEYS, key_id))

    async def get(self, key_id: str) -> ApiKeyInfo | None:
        raw = await self._redis.hget(keys.API_KEYS, key_id)
        return None if raw is None else _info(orjson.loads(raw))

    async def verify(self, key_id: str, key: str) -> ApiKeyInfo | None:
        raw = await self._redis.hget(keys.API_KEYS, key_id)
        if raw is None:
            return None
        record = orjson.loads(raw)
        if not hmac.compare_digest(record["digest"], secret_digest(key)):
            return None
        return _info(record)

    async def issue_token(self, key_id: str, key: str, *, org_id: str = "",
                          now_s: int | None = None, ttl_s: int = ACCESS_TOKEN_TTL_S) -> str:
        """A signed access token for a valid key pair; AccessTokenError otherwise (one reason
        for an unknown id and a wrong key, so ids cannot be probed)."""
        info = await self.verify(key_id, key)
        if info is None:
            raise AccessTokenError("invalid API key id or API key")
        now = int(time.time()) if now_s is None else now_s
        claims = {"iss": ISSUER, "sub": info.id, "org": org_id, "iat": now, "exp": now + ttl_s}
        return jwt.encode(claims, await self._secret(), algorithm="HS256")

    async def verify_token(self, token: str) -> ApiKeyInfo:
        """The key behind a valid, unexpired token whose key is not revoked; else AccessTokenError."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token, await self._secret(), algorithms=["HS256"], issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise AccessTokenError("access token expired") from None
        except jwt.InvalidTokenError as exc:
            raise AccessTokenError(f"invalid access token: {exc}") from None
        info = await self.get(str(claims["sub"]))
        if info is None:
            raise AccessTokenError("the API key of this access token was revoked")
        return info

    @staticmethod
    def expiry(token: str) -> float:
        """The epoch seconds at which ``token`` (already verified) expires."""
        return float(jwt.decode(token, options={"verify_signature": False})["exp"])

    async def _secret(self) -> bytes:
        secret = await self._redis.get(keys.JWT_SECRET)
        if secret is None:
            # NX: concurrent first users agree on whichever secret was written first.
            await self._redis.set(keys.JWT_SECRET, secrets.token_bytes(32), nx=True)
            secret = await self._redis.get(keys.JWT_SECRET)
        if not isinstance(secret, bytes):  # only a client built with decode_responses=True
            raise RuntimeError("the Redis client must return bytes (decode_responses=False)")
        return secret


def _info(record: dict[str, Any]) -> ApiKeyInfo:
    return ApiKeyInfo(id=record["id"], name=record["name"], created_ms=record["created_ms"])
