"""A clock that tests set by hand, injected wherever ``processor.clock.Clock`` is accepted."""

from __future__ import annotations

from processor.domain.events import parse_timestamp_ms


def at(iso: str) -> int:
    """Epoch ms of an ISO-8601 instant (``"2026-01-02T00:00:00Z"``)."""
    return parse_timestamp_ms(iso.replace("Z", "+00:00"))


class ManualClock:
    """Stands still until told to move; never goes backwards (workers assume monotonic time)."""

    __test__ = False  # not a test class, whatever pytest's collection rules guess

    def __init__(self, start_ms: int) -> None:
        self.now_ms = start_ms

    def __call__(self) -> int:
        return self.now_ms

    def set(self, when_ms: int) -> None:
        if when_ms < self.now_ms:
            raise ValueError(f"clock may not go back from {self.now_ms} to {when_ms}")
        self.now_ms = when_ms

    def advance(self, delta_ms: int) -> None:
        self.set(self.now_ms + delta_ms)
