#!/usr/bin/env bash
# Create .venv and install what the app needs (add --dev for the tests and linters too).
# Safe to run again: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned to the release this project is tested with (a CPU-only machine may use
# --index-url https://download.pytorch.org/whl/cpu for a smaller download).
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
if [ "${1:-}" = "--dev" ]; then
  .venv/bin/python -m pip install -q -r requirements-dev.txt
else
  .venv/bin/python -m pip install -q -r requirements.txt
fi
