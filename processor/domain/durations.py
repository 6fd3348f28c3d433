"""ISO-8601 durations exactly as pydantic v2 reads and writes ``timedelta``.

The Signals SDK serialises ``period``, ``ttl``, ``refresh_rate`` and ``window`` with pydantic's
``model_dump(mode="json")``; to echo them back byte-for-byte we delegate to the same pydantic
core instead of re-implementing the format. What that means, measured on pydantic 2.x:

- parsing: ``P7D``, ``PT10M``, ``PT1H30M``, ``PT0.5S``, ``P1W``; ``Y`` = 365 days and ``M`` (before
  ``T``) = 30 days, so ``P1Y35D`` is 400 days; fractions are allowed (``P1.5D``);
- formatting: days are folded into years of 365 days (400 days -> ``P1Y35D``, 30 days -> ``P30D``,
  never months), zero is ``PT0S``, sub-second parts keep microseconds (``PT0.000001S``).

``parse_duration`` accepts only the ISO form (it must start with ``P``), not pydantic's other lax
inputs such as ``"01:00:00"``, because the API contract promises ISO-8601.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator, TypeAdapter, ValidationError

_TIMEDELTA: TypeAdapter[timedelta] = TypeAdapter(timedelta)


def parse_duration(text: str) -> timedelta:
    """Parse an ISO-8601 duration; raise ValueError with the reason when it is not one."""
    stripped = text.strip()
    if not stripped.lstrip("+-").startswith("P"):
        raise ValueError(
            f"invalid ISO-8601 duration {text!r}: must start with 'P' (e.g. P7D, PT10M)"
        )
    try:
        return _TIMEDELTA.validate_python(stripped)
    except ValidationError:
        raise ValueError(
            f"invalid ISO-8601 duration {text!r} (expected e.g. P7D, PT10M, PT1H30M, P1Y35D)"
        ) from None


def format_duration(value: timedelta) -> str:
    """The string pydantic's ``model_dump(mode="json")`` produces for ``value``."""
    result = _TIMEDELTA.dump_python(value, mode="json")
    assert isinstance(result, str)
    return result


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("duration must be positive")
    return value


PositiveDuration = Annotated[timedelta, AfterValidator(_positive)]
"""A timedelta field that rejects zero and negative durations (periods, TTLs, refresh rates)."""
