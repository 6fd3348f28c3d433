"""Authentication for every endpoint the contracts do not make public, and the key exchange.

Public (no token): the Snowplow collector (see ``processor.api.collector``), the key exchange
below (it authenticates by key pair) and health. Everything else depends on
:func:`require_token`, which accepts

- an API token (``processor token create``), stored hashed in Redis, or
- a JWT access token from the key exchange (``processor.state.apikeys``),

sent as ``Authorization: Bearer <t>`` (Signals SDKs), a raw ``Authorization: <t>``,
``?access_token=<t>`` or ``?key=<t>`` (Lytics clients). Tokens are never logged or echoed.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Header, HTTPException, Request, status
from redis.asyncio import Redis

from processor.state.apikeys import AccessTokenError, ApiKeyStore, looks_like_jwt
from processor.state.tokens import TokenInfo, TokenStore

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _unauthorized(reason: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, reason, headers=_CHALLENGE)


def presented_token(request: Request) -> str:
    """The token of the request, from whichever place the client put it ("" when none)."""
    return (header_token(request.headers.get("authorization", ""))
            or request.query_params.get("access_token", "")
            or request.query_params.get("key", "")).strip()  # fmt: skip


def header_token(authorization: str) -> str:
    """The token of an ``Authorization`` header value, bearer or raw ("" when none)."""
    token = authorization[7:] if authorization[:7].lower() == "bearer " else authorization
    return token.strip()


# A verified token is trusted for this long without asking Redis again: a revocation takes
# effect within a second, and a burst of reads costs one lookup, not one per request. An access
# token (JWT) is trusted no longer than until it expires.
TOKEN_CACHE_S = 1.0
_VERIFIED: dict[str, tuple[TokenInfo, float]] = {}  # token -> (info, trusted until, monotonic)


async def require_token(request: Request) -> TokenInfo:
    """FastAPI dependency: the caller's token info, or 401 with the reason."""
    return await verify_token(request.app.state.redis, presented_token(request))


async def verify_token(redis: Redis, token: str) -> TokenInfo:
    """The info of ``token`` as presented (see :func:`presented_token`), or 401 with the
    reason. A token verified less than ``TOKEN_CACHE_S`` ago costs no Redis lookup."""
    if not token:
        raise _unauthorized("missing API token")
    recent = _VERIFIED.get(token)
    now = time.monotonic()
    if recent is not None and now < recent[1]:
        return recent[0]
    until = now + TOKEN_CACHE_S
    if looks_like_jwt(token):
        try:
            key = await ApiKeyStore(redis).verify_token(token)
        except AccessTokenError as exc:
            _VERIFIED.pop(token, None)
            raise _unauthorized(exc.reason) from None
        info = TokenInfo(id=f"apikey:{key.id}", name=key.name, created_ms=key.created_ms)
        until = min(until, now + ApiKeyStore.expiry(token) - time.time())
    else:
        found = await TokenStore(redis).verify(token)
        if found is None:
            _VERIFIED.pop(token, None)
            raise _unauthorized("invalid API token")
        info = found
    if len(_VERIFIED) > 10_000:
        _VERIFIED.clear()
    _VERIFIED[token] = (info, until)
    return info


router = APIRouter()


@router.get("/api/msc/v1/organizations/{org_id}/credentials/v3/token",
            responses={401: {"description": "missing, unknown or revoked key"}})
async def exchange_api_key(
    request: Request,
    org_id: str,
    x_api_key_id: str = Header("", alias="X-API-Key-Id"),
    x_api_key: str = Header("", alias="X-API-Key"),
) -> dict[str, str]:
    """The Snowplow console's key exchange (signals-api.md §0): API key id + key headers ->
    ``{"accessToken": "<JWT>"}``, valid for ``apikeys.ACCESS_TOKEN_TTL_S`` seconds."""
    if not x_api_key_id or not x_api_key:
        raise _unauthorized("X-API-Key-Id and X-API-Key headers are required")
    try:
        token = await ApiKeyStore(request.app.state.redis).issue_token(
            x_api_key_id, x_api_key, org_id=org_id)
    except AccessTokenError as exc:
        raise _unauthorized(exc.reason) from None
    return {"accessToken": token}
