#!/usr/bin/env bash
# Create .venv and install what the app needs (--dev: also the tests, linters and chromium).
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
  # The browser tests drive Debian's chromium (Playwright cannot download its own here).
  if ! command -v chromium >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
    else
      echo "note: install chromium (sudo apt-get install chromium) to run the browser tests"
    fi
  fi
else
  .venv/bin/python -m pip install -q -r requirements.txt
fi
