"""Webhook target policy: schemes, and internal addresses refused unless allowed."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from processor.sinks.errors import DeliveryFailed, TargetRefused
from processor.sinks.urlguard import check_target, check_target_async, peer_refusal, refusal

STRICT = {"allow_private": False, "allow_loopback": False}


@pytest.mark.parametrize(("address", "why"), [
    ("127.0.0.1", "a loopback address"), ("127.8.9.1", "a loopback address"),
    ("::1", "a loopback address"),
    ("10.1.2.3", "a private address"), ("172.16.0.1", "a private address"),
    ("192.168.1.1", "a private address"), ("100.64.0.1", "a private address"),
    ("fd00::1", "a private address"),
    ("169.254.169.254", "a link-local address"), ("fe80::1", "a link-local address"),
    ("224.0.0.1", "a multicast address"), ("ff02::1", "a multicast address"),
    ("0.0.0.0", "an unspecified address"), ("::", "an unspecified address"),
    ("240.0.0.1", "a reserved address"),
    ("::ffff:127.0.0.1", "a loopback address"), ("::ffff:10.0.0.1", "a private address"),
    ("::ffff:169.254.169.254", "a link-local address"),
])
def test_internal_addresses_are_refused(address: str, why: str) -> None:
    assert refusal(ipaddress.ip_address(address), **STRICT) == why


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1::1", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address), **STRICT) is None


def test_allow_flags_open_only_their_own_category() -> None:
    loopback, private = ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.0.0.1")
    metadata = ipaddress.ip_address("169.254.169.254")
    assert refusal(loopback, allow_private=False, allow_loopback=True) is None
    assert refusal(private, allow_private=False, allow_loopback=True) == "a private address"
    assert refusal(private, allow_private=True, allow_loopback=False) is None
    assert refusal(loopback, allow_private=True, allow_loopback=False) == "a loopback address"
    assert refusal(metadata, allow_private=True, allow_loopback=True) == "a link-local address"


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://example.com/", "only http and https"), ("file:///etc/passwd", "only http and https"),
    ("http:///x", "no host"), ("http://127.0.0.1/hook", "loopback address"),
    ("http://localhost:8080/hook", "loopback address"), ("http://[::1]/", "loopback address"),
    ("http://10.0.0.7/", "private address"), ("http://169.254.169.254/latest/", "link-local"),
    ("http://0.0.0.0/", "unspecified"), ("http://2130706433/", "loopback address"),  # decimal IPv4
])
def test_check_target_refuses(url: str, message: str) -> None:
    with pytest.raises(TargetRefused, match=message) as caught:
        check_target(url, **STRICT)
    assert caught.value.retriable is False
    with pytest.raises(TargetRefused, match=message):
        asyncio.run(check_target_async(url, **STRICT))


def test_check_target_allows_loopback_when_configured() -> None:
    check_target("http://127.0.0.1:9/hook", allow_private=False, allow_loopback=True)
    asyncio.run(check_target_async("http://localhost/", allow_private=False, allow_loopback=True))


def test_unresolvable_host_is_a_retriable_failure() -> None:
    with pytest.raises(DeliveryFailed, match="cannot resolve") as caught:
        check_target("http://no-such-host.invalid/", **STRICT)
    assert caught.value.retriable is True
    assert not isinstance(caught.value, TargetRefused)


def test_the_address_a_connection_reached_is_judged_like_a_resolved_one() -> None:
    assert peer_refusal("127.0.0.1", allow_private=False, allow_loopback=False) is not None
    assert peer_refusal("::ffff:169.254.169.254", allow_private=True, allow_loopback=True)
    assert peer_refusal("fe80::1%eth0", allow_private=True, allow_loopback=True)
    assert peer_refusal("127.0.0.1", allow_private=False, allow_loopback=True) is None
    assert peer_refusal("93.184.216.34", allow_private=False, allow_loopback=False) is None
    assert peer_refusal("not-an-ip", allow_private=True, allow_loopback=True)
