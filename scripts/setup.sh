#!/usr/bin/env bash
# Set up a fresh machine: a venv with the CPU build of torch, the project, and (as root) the
# Debian packages the reports and browser tests use (Chromium, Noto CJK fonts).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate

# torch first, pinned: this takes the CPU build; a bare `torch` would pull a multi-GB CUDA build.
python -m pip install --quiet --disable-pip-version-check torch==2.13.0
python -m pip install --quiet --disable-pip-version-check -e ".[test]"

if [ "${DOUBAN_SKIP_APT:-0}" != "1" ] && command -v apt-get >/dev/null && [ "$(id -u)" = "0" ]; then
    if ! command -v chromium >/dev/null || [ ! -d /usr/share/fonts/opentype/noto ] || [ ! -d /usr/share/fonts/truetype/noto ]; then
        echo "Installing Chromium and Noto CJK + emoji fonts (Debian packages) ..."
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk fonts-noto-color-emoji >/dev/null
    fi
fi
echo "Environment ready: source .venv/bin/activate"
