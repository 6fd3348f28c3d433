"""Builtins over strings, URLs, e-mail addresses, hashes, encodings and IPs (spec §1.5)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .operators import contains
from .registry import CallContext, FunctionSpec, table
from .values import NOT_OK, to_number, to_text


def _text_fn(fn: Callable[..., Any], arity: int = 1) -> Callable[[list[Any], CallContext], Any]:
    """Lift ``fn(str, ...)`` to a builtin that is not-ok unless its text arguments are text."""

    def impl(args: list[Any], _: CallContext) -> Any:
        texts = [to_text(a) for a in args[:arity]]
        if any(t is None for t in texts):
            return NOT_OK
        result = fn(*texts, *args[arity:])
        return NOT_OK if result is None else result

    return impl


def _substr(text: str, start: Any, end: Any = None) -> str | None:
    begin = to_number(start)
    if not isinstance(begin, int):
        return None
    if end is None:
        return text[begin:]
    stop = to_number(end)
    return text[begin:stop] if isinstance(stop, int) else None


def _split(text: str, sep: str) -> list[str]:
    return text.split(sep) if sep else list(text)


def _join(args: list[Any], _: CallContext) -> Any:
    if len(args) < 2 or not isinstance(args[-1], str):
        return NOT_OK
    items: list[Any] = []
    for arg in args[:-1]:
        items.extend(arg if isinstance(arg, list | tuple) else [arg])
    texts = [to_text(item) for item in items]
    return NOT_OK if any(t is None for t in texts) else args[-1].join(texts)  # type: ignore[arg-type]


def _titlecase(text: str) -> str:
    return " ".join(word[:1].upper() + word[1:].lower() for word in text.split(" "))


def _email(text: str) -> str | None:
    text = text.strip().lower()
    if text.count("@") != 1:
        return None
    name, domain = text.split("@")
    return text if name and "." in domain and not domain.startswith(".") else None


def _emaildomain(text: str) -> str | None:
    email = _email(text)
    return None if email is None else email.split("@")[1]


def _emailname(text: str) -> str | None:
    email = _email(text)
    return None if email is None else email.split("@")[0]


def _split_url(text: str) -> Any:
    text = text.strip()
    if "://" not in text and not text.startswith("//"):
        text = "//" + text
    try:
        return urlsplit(text)
    except ValueError:
        return None


def _host(text: str) -> str | None:
    parts = _split_url(text)
    return parts.hostname if parts is not None and parts.hostname else None


def _domain(text: str) -> str | None:
    """Registered domain approximated as the last two labels (``www.x.com`` -> ``x.com``)."""
    host = _host(text)
    if host is None:
        return None
    labels = host.split(".")
    return ".".join(labels[-2:]) if len(labels) >= 2 else host


def _path(text: str) -> str | None:
    parts = _split_url(text)
    return None if parts is None else parts.path


def _qs(text: str, key: Any) -> str | None:
    parts = _split_url(text)
    if parts is None or not isinstance(key, str):
        return None
    values = parse_qs(parts.query).get(key)
    return values[0] if values else None


def _urlmain(text: str) -> str | None:
    parts = _split_url(text)
    return None if parts is None or not parts.hostname else f"{parts.hostname}{parts.path}"


def _urlminusqs(text: str) -> str | None:
    return text.split("?", 1)[0]


def _hash(algorithm: str) -> Callable[[str], str]:
    return lambda text: hashlib.new(algorithm, text.encode()).hexdigest()


def _b64decode(text: str) -> str | None:
    try:
        return base64.b64decode(text, validate=True).decode()
    except (binascii.Error, ValueError):
        return None


def _ipfilter(ip: str, cidr: str) -> bool | None:
    try:
        return ipaddress.ip_address(ip.strip()) in ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        return None


TEXT_FUNCTIONS = table(
    FunctionSpec("contains", 2, 2, lambda args, _: contains(args[0], args[1])),
    FunctionSpec("hasprefix", 2, 2, _text_fn(lambda s, p: s.startswith(p), 2)),
    FunctionSpec("hassuffix", 2, 2, _text_fn(lambda s, p: s.endswith(p), 2)),
    FunctionSpec("tolower", 1, 1, _text_fn(str.lower)),
    FunctionSpec("toupper", 1, 1, _text_fn(str.upper)),
    FunctionSpec("string.lowercase", 1, 1, _text_fn(str.lower)),
    FunctionSpec("string.uppercase", 1, 1, _text_fn(str.upper)),
    FunctionSpec("string.titlecase", 1, 1, _text_fn(_titlecase)),
    FunctionSpec("strip", 1, 1, _text_fn(str.strip)),
    FunctionSpec("replace", 2, 3, _text_fn(lambda s, a, b="": s.replace(a, b), 3)),
    FunctionSpec("split", 2, 2, _text_fn(_split, 2)),
    FunctionSpec("join", 2, None, _join),
    FunctionSpec("string.substr", 2, 3, _text_fn(_substr)),
    FunctionSpec("string.index", 2, 2, _text_fn(lambda s, sub: s.find(sub), 2)),
    FunctionSpec("email", 1, 1, _text_fn(_email)),
    FunctionSpec("emaildomain", 1, 1, _text_fn(_emaildomain)),
    FunctionSpec("emailname", 1, 1, _text_fn(_emailname)),
    FunctionSpec("host", 1, 1, _text_fn(_host)),
    FunctionSpec("domain", 1, 1, _text_fn(_domain)),
    FunctionSpec("path", 1, 1, _text_fn(_path)),
    FunctionSpec("qs", 2, 2, _text_fn(_qs)),
    FunctionSpec("urldecode", 1, 1, _text_fn(unquote)),
    FunctionSpec("urlmain", 1, 1, _text_fn(_urlmain)),
    FunctionSpec("urlminusqs", 1, 1, _text_fn(_urlminusqs)),
    FunctionSpec("hash.md5", 1, 1, _text_fn(_hash("md5"))),
    FunctionSpec("hash.sha1", 1, 1, _text_fn(_hash("sha1"))),
    FunctionSpec("hash.sha256", 1, 1, _text_fn(_hash("sha256"))),
    FunctionSpec("hash.sha512", 1, 1, _text_fn(_hash("sha512"))),
    FunctionSpec("encoding.b64encode", 1, 1,
                 _text_fn(lambda s: base64.b64encode(s.encode()).decode())),
    FunctionSpec("encoding.b64decode", 1, 1, _text_fn(_b64decode)),
    FunctionSpec("ipfilter", 2, 2, _text_fn(_ipfilter, 2)),
)
