#!/usr/bin/env bash
# The main job on the bundled defaults: install, provision the models, build the sample
# knowledge base from knowledge_base/samples, and answer two sample searches.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
KBQA=.venv/bin/kb-qa
echo "==> provisioning the bundled models (converted once into .cache/models)"
$KBQA models provision
echo "==> building the sample knowledge base 'handbook' (incremental: unchanged files are skipped)"
$KBQA kb rebuild handbook --dir knowledge_base/samples --create
echo "==> sample searches"
$KBQA kb search handbook "年假没休完可以顺延吗？" -k 2
$KBQA kb search handbook "Who approves an expense above CNY 5,000?" -k 2
