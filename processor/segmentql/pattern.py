"""LIKE patterns: the mb0/glob dialect Lytics uses (spec §1.4, quirk 4).

``*`` matches any run of characters except ``/``; ``**`` also crosses ``/``; ``?`` is one
non-``/`` character; ``[a-z]`` / ``[^a-z]`` (or ``[!a-z]``) are classes; ``\\`` escapes the next
character; SQL's ``%`` is rewritten to ``*`` first. Matching is whole-string and case-sensitive.
"""

from __future__ import annotations

import re
from functools import lru_cache


@lru_cache(maxsize=1024)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """The regular expression equivalent to a LIKE pattern (always compiles)."""
    pattern = pattern.replace("%", "*")
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                out.append(".*")
                i += 2
                while i < n and pattern[i] == "*":
                    i += 1
                continue
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            end, cls = _char_class(pattern, i)
            if cls is not None:
                out.append(cls)
                i = end
                continue
            out.append(re.escape(ch))
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _char_class(pattern: str, start: int) -> tuple[int, str | None]:
    """Translate ``[...]`` at ``start``; returns (index after it, regex) or (start, None)."""
    i = start + 1
    negate = i < len(pattern) and pattern[i] in "^!"
    if negate:
        i += 1
    body: list[str] = []
    first = True
    while i < len(pattern) and (pattern[i] != "]" or first):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            i += 1
            ch = pattern[i]
        body.append("\\" + ch if ch in "\\]^[" else ch)
        first = False
        i += 1
    if i >= len(pattern) or not body:
        return start, None  # unterminated: "[" is a literal character
    inner = "".join(body)
    if not _valid_class(inner):
        return start, None
    return i + 1, f"[{'^/' if negate else ''}{inner}]"


def _valid_class(inner: str) -> bool:
    try:
        re.compile(f"[{inner}]")
    except re.error:
        return False
    return True


def glob_match(pattern: str, text: str) -> bool:
    return compile_glob(pattern).fullmatch(text) is not None
