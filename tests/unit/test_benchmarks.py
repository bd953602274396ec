"""The benchmark scripts import what the package has: a name moved inside ``pipeline`` breaks
them at start-up, and no other test runs them."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_every_name_a_benchmark_imports_from_the_package_exists() -> None:
    scripts = sorted(BENCHMARKS.glob("*.py"))
    assert scripts
    missing = []
    for path in scripts:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline"):
                module = importlib.import_module(node.module)
                missing += [f"{path.name}: {node.module}.{a.name}" for a in node.names
                            if not hasattr(module, a.name)]  # fmt: skip
    assert missing == []
