"""Redis commands packed as RESP by hand, for the hot paths that send many of them at once.

redis-py packs each argument of each command in Python (type checks, encoding, joins): for the
worker's per-batch write that was a tenth of its time. Here a caller packs what it already
has as bytes, and :func:`round_trip` sends the lot on a connection of the client's own pool
(so TLS, AUTH and SELECT are redis-py's business) and reads the replies.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis


def bulk(value: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def command(*args: str | bytes | int) -> bytes:
    """One RESP command."""
    return b"*%d\r\n%s" % (len(args), b"".join(bulk(_bytes(arg)) for arg in args))


def _bytes(arg: str | bytes | int) -> bytes:
    if isinstance(arg, bytes):
        return arg
    return str(arg).encode()


class Commands:
    """Packed commands for one round trip, in order. Staging functions of the state modules
    add to it; the caller sends it with :func:`round_trip`."""

    __slots__ = ("parts", "count")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.count = 0  # commands, hence replies

    def add(self, *args: str | bytes | int) -> None:
        self.parts.append(command(*args))
        self.count += 1

    def add_packed(self, packed: bytes) -> None:
        """One command packed by the caller."""
        self.parts.append(packed)
        self.count += 1

    def packed(self) -> bytes:
        return b"".join(self.parts)


async def round_trip(redis: Redis, packed: bytes, replies: int) -> list[Any]:
    """Send ``packed`` on a connection of ``redis``'s pool and return its ``replies`` replies
    (bytes undecoded). The first error reply raises (``NoScriptError`` for a missing script);
    the connection is then dropped, as it may have replies left unread."""
    pool = redis.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await connection.send_packed_command(packed)
        return [await connection.read_response(disable_decoding=True) for _ in range(replies)]
    except BaseException:
        await connection.disconnect()
        raise
    finally:
        await pool.release(connection)
