"""SegmentQL (Lytics FilterQL): parse, print, evaluate, and schedule time-based re-evaluation.

Pure and synchronous; imports only the standard library. Public API::

    parse(text) -> Statement                  parse_script(text) -> tuple[Statement, ...]
    print_statement(stmt) -> str              print_expr(expr) -> str
    to_ast_json(stmt) -> dict                 referenced_fields(stmt) -> frozenset[str]
    included_segments(stmt) -> frozenset[str] uses_time(stmt) -> bool
    evaluate(stmt, profile, *, now_ms, resolve_include=None) -> bool
    next_boundary(stmt, profile, *, now_ms, include_boundary=None) -> int | None
    SegmentQLError(message, line, column, expected)
"""

from .analysis import included_segments, referenced_fields, to_ast_json, uses_time
from .ast import Expr, Statement
from .boundaries import next_boundary
from .errors import SegmentQLError
from .evaluator import IncludeResolver, evaluate
from .printer import print_expr, print_statement
from .statement import parse, parse_script

__all__ = [
    "Expr",
    "IncludeResolver",
    "SegmentQLError",
    "Statement",
    "evaluate",
    "included_segments",
    "next_boundary",
    "parse",
    "parse_script",
    "print_expr",
    "print_statement",
    "referenced_fields",
    "to_ast_json",
    "uses_time",
]
