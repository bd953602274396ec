#!/usr/bin/env bash
# The main job on the embedded default: generated demo corpus -> prepare -> features -> heads ->
# evaluation -> reports -> the app (pass --no-app to stop after the reports).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate
douban demo "$@"
