"""The one error the SegmentQL package raises for bad input.

Every syntax or validation problem in SegmentQL text surfaces as :class:`SegmentQLError`,
carrying the 1-based line and column where it was noticed and what the parser expected there,
so that an API can answer ``400 Invalid SegmentQL`` with a message a person can act on.
"""

from __future__ import annotations


class SegmentQLError(ValueError):
    """Invalid SegmentQL text.

    ``str(err)`` reads ``"line 2, column 7: expected value after '=', got ')'"``.
    ``expected`` lists what would have been accepted at that point (may be empty).
    """

    def __init__(
        self, message: str, line: int, column: int, expected: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message, line, column, expected)
        self.message = message
        self.line = line
        self.column = column
        self.expected = expected

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.message}"
