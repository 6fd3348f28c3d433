"""Where a webhook may point: http(s) only, and no internal addresses unless configured.

A webhook URL is user input that makes our servers send requests, so it could probe the
network they sit in (SSRF): ``http://169.254.169.254/`` (cloud metadata), ``http://10.0.0.5/``,
``http://localhost:6379/``. ``check_target`` resolves the host and refuses the request when
*any* address it resolves to is:

- loopback (127/8, ::1)                            unless ``allow_loopback``
- private / not globally routable (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7 ...)
                                                   unless ``allow_private``
- link-local (169.254/16, fe80::/10), multicast, unspecified (0.0.0.0, ::), reserved: always

IPv4-mapped IPv6 (``::ffff:10.0.0.1``) is judged by the IPv4 address it carries.

The HTTP client resolves the name again when it connects, so a DNS answer that changes
between this check and the connection (rebinding) is caught there: the webhook sink's client
judges the address each new connection reached with ``peer_refusal``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from processor.sinks.errors import DeliveryFailed, TargetRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def check_target(url: str, *, allow_private: bool, allow_loopback: bool) -> None:
    """Raise ``TargetRefused`` if ``url`` may not be called (blocking DNS lookup).

    Raises ``DeliveryFailed(retriable=True)`` when the name does not resolve (DNS may recover).
    """
    host, port = _host_port(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise DeliveryFailed(f"cannot resolve {host!r}: {exc}", retriable=True) from None
    _judge(host, [str(info[4][0]) for info in infos], allow_private, allow_loopback)


async def check_target_async(url: str, *, allow_private: bool, allow_loopback: bool) -> None:
    """``check_target`` with the lookup done by the running loop (never blocks it)."""
    host, port = _host_port(url)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise DeliveryFailed(f"cannot resolve {host!r}: {exc}", retriable=True) from None
    _judge(host, [str(info[4][0]) for info in infos], allow_private, allow_loopback)


def peer_refusal(address: str, *, allow_private: bool, allow_loopback: bool) -> str | None:
    """``refusal`` for the textual address a connection reached (its peer name)."""
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return f"an unparseable address {address!r}"
    return refusal(parsed, allow_private=allow_private, allow_loopback=allow_loopback)


def refusal(address: IPAddress, *, allow_private: bool, allow_loopback: bool) -> str | None:
    """Why ``address`` is refused, or ``None`` if it may be called. Pure."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_loopback:
        return None if allow_loopback else "a loopback address"
    if address.is_reserved:
        return "a reserved address"
    if address.is_private or not address.is_global:
        return None if allow_private else "a private address"
    return None


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise TargetRefused(f"only http and https webhook URLs are allowed, not {parts.scheme!r}")
    if not parts.hostname:
        raise TargetRefused("the webhook URL has no host")
    try:
        port = parts.port
    except ValueError:
        raise TargetRefused("the webhook URL has an invalid port") from None
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def _judge(host: str, addresses: list[str], allow_private: bool, allow_loopback: bool) -> None:
    if not addresses:
        raise DeliveryFailed(f"{host!r} resolved to no address", retriable=True)
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id
        why = refusal(address, allow_private=allow_private, allow_loopback=allow_loopback)
        if why is not None:
            raise TargetRefused(f"webhook host {host!r} resolves to {why} ({address}); "
                                "refused by the delivery policy")
