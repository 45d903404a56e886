#!/usr/bin/env bash
# Lint, type-check and test. Installs first (idempotent; Chromium too, for the browser tests), so it works
# on a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/install-browser.sh
echo "==> ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "==> mypy"
.venv/bin/mypy
echo "==> pytest"
.venv/bin/python -m pytest "$@"
