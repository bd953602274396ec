#!/usr/bin/env bash
# The test suite, from a fresh clone: set up, lint, architecture contracts, then pytest in lanes:
# the fast lane first (unit, data and model tests on the small demo run), then the slow, real-data
# and browser tests, then the Ray engine (its optional extra is installed for that step).
# Arguments go to pytest instead of the lanes (e.g. `bash scripts/test.sh tests/unit -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate
ruff check pipeline app tests benchmarks
lint-imports  # architecture contracts: [tool.importlinter] in pyproject.toml
if [ "$#" -gt 0 ]; then
    exec python -m pytest -q "$@"
fi
echo "== fast lane" >&2
python -m pytest -q -m "not slow and not browser and not real_data and not ray"
echo "== slow, real-data and browser tests" >&2
python -m pytest -q -m "(slow or browser or real_data) and not ray"
echo "== Ray engine (optional extra)" >&2
python -m pip install --quiet --disable-pip-version-check -e ".[test,ray]"
python -m pytest -q -m ray
