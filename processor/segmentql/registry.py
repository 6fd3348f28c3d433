"""The shape of a SegmentQL builtin function, shared by the parser and the evaluator.

The parser refuses unknown names and wrong argument counts (we always have a registry, so
qlbridge's "unknown functions evaluate to not-ok" mode never applies). The evaluator calls
``impl`` with evaluated arguments; unless ``sees_missing`` is set, a missing or not-ok argument
makes the call not-ok without calling ``impl``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CallContext:
    """What a function may know besides its arguments: the evaluation clock."""

    now_ms: int


Impl = Callable[[list[Any], CallContext], Any]


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    min_args: int
    max_args: int | None
    impl: Impl
    sees_missing: bool = False

    def accepts(self, count: int) -> bool:
        return count >= self.min_args and (self.max_args is None or count <= self.max_args)

    def arity_text(self) -> str:
        if self.max_args == self.min_args:
            return f"{self.min_args} argument(s)"
        if self.max_args is None:
            return f"at least {self.min_args} argument(s)"
        return f"{self.min_args} to {self.max_args} arguments"


def table(*specs: FunctionSpec) -> dict[str, FunctionSpec]:
    return {spec.name: spec for spec in specs}
