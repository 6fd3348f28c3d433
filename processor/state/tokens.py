"""API tokens, stored hashed: the plain token is shown once, at creation, and never again."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

import orjson
from redis.asyncio import Redis

from processor.state import keys

TOKEN_PREFIX = "sbx_"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: str
    name: str
    created_ms: int


def secret_digest(secret: str) -> str:
    """What is stored of a token or API key: its SHA-256 (they are long random strings)."""
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def create(self, name: str) -> tuple[TokenInfo, str]:
        """Create a token; return its info and the plain token (the only time it exists)."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        info = TokenInfo(id=secrets.token_hex(6), name=name, created_ms=time.time_ns() // 10**6)
        record = {"id": info.id, "name": info.name, "created_ms": info.created_ms}
        await self._redis.hset(keys.API_TOKENS, secret_digest(token), orjson.dumps(record))
        return info, token

    async def verify(self, token: str) -> TokenInfo | None:
        raw = await self._redis.hget(keys.API_TOKENS, secret_digest(token))
        if raw is None:
            return None
        return TokenInfo(**orjson.loads(raw))

    async def list(self) -> list[TokenInfo]:
        raw = await self._redis.hgetall(keys.API_TOKENS)
        return sorted((TokenInfo(**orjson.loads(v)) for v in raw.values()), key=lambda t: t.created_ms)

    async def revoke(self, token_id: str) -> bool:
        raw = await self._redis.hgetall(keys.API_TOKENS)
        for digest, value in raw.items():
            if orjson.loads(value)["id"] == token_id:
                await self._redis.hdel(keys.API_TOKENS, digest)
                return True
        return False
