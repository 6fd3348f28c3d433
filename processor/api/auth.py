"""Bearer-token authentication for every endpoint the contracts do not make public."""

from __future__ import annotations

from fastapi import HTTPException, Request, status

from processor.state.tokens import TokenInfo, TokenStore


async def require_token(request: Request) -> TokenInfo:
    """Accept ``Authorization: Bearer <token>`` (Signals) or a raw token / ``?access_token=``
    (Lytics). The token itself is never logged or echoed."""
    header = request.headers.get("authorization", "")
    token = header[7:] if header.lower().startswith("bearer ") else header
    token = token.strip() or request.query_params.get("access_token", "") or request.query_params.get("key", "")
    if not token:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing API token",
                            headers={"WWW-Authenticate": "Bearer"})
    info = await TokenStore(request.app.state.redis).verify(token)
    if info is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid API token",
                            headers={"WWW-Authenticate": "Bearer"})
    return info
