"""One rooted error hierarchy.

    SignalboxError
    ├── ConfigError              bad settings or definitions; fix and restart / republish
    ├── DefinitionError          an invalid attribute group, segment, subscription ... (HTTP 4xx)
    ├── EventRejected            one event cannot be applied; it goes to the DLQ with ``reason``
    └── DeliveryError            a sink could not deliver; ``retriable`` says whether to retry

Policy lives on the class (``retriable``), so callers branch on flags, not on types.
"""

from __future__ import annotations


class SignalboxError(Exception):
    retriable: bool = False


class ConfigError(SignalboxError):
    pass


class DefinitionError(SignalboxError):
    pass


class EventRejected(SignalboxError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DeliveryError(SignalboxError):
    def __init__(self, reason: str, *, retriable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retriable = retriable
