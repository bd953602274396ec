"""No module of the package imports names from the package root (``from pipeline import
__version__``): the root imports every layer, so such an import runs back up the layers where
import-linter cannot see it. Submodules (``from pipeline import artifacts``) are fine."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "pipeline"


def test_no_module_imports_names_from_the_package_root() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "pipeline" and node.level == 0:
                for alias in node.names:
                    module = PACKAGE / alias.name
                    if not (module.with_suffix(".py").exists() or module.is_dir()):
                        offenders.append(f"{path.relative_to(PACKAGE.parent)}: {alias.name}")
    assert offenders == []
