#!/usr/bin/env bash
# The test suite, from a fresh clone: set up, lint, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate
ruff check pipeline app tests benchmarks
lint-imports  # architecture contracts: [tool.importlinter] in pyproject.toml
python -m pytest -q "$@"
