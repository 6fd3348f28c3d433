"""Dependencies point inward: the pure packages import no I/O library and no adapter."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "processor"
PURE = ("domain", "segmentql")
FORBIDDEN = (
    "redis", "aiokafka", "faust", "mode", "httpx", "boto3", "botocore", "fastapi", "starlette",
    "uvicorn", "socket", "asyncio", "requests", "urllib.request", "http", "subprocess",
    "processor.state", "processor.streams", "processor.sinks", "processor.api",
)  # fmt: skip


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("package", PURE)
def test_pure_packages_import_no_io(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no modules under processor/{package}"
    offenders = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in files
        for module in imported_modules(path)
        if any(module == bad or module.startswith(bad + ".") for bad in FORBIDDEN)
    }
    assert not offenders, sorted(offenders)
