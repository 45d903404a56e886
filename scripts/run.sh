#!/usr/bin/env bash
# The main job on the bundled defaults: install, provision the models, build the sample
# knowledge base from knowledge_base/samples, run two sample searches and answer a question in each
# language with the bundled chat model (Qwen2.5-Coder-1.5B through llama.cpp), citing its sources
# with evidence highlights; then serve the HTTP API and the page on 127.0.0.1:7861 (Ctrl-C stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
KBQA=.venv/bin/kb-qa
echo "==> provisioning the bundled models (converted/assembled and checked once into .cache/models)"
$KBQA models provision
echo "==> building the sample knowledge base 'handbook' (incremental: unchanged files are skipped)"
$KBQA kb rebuild handbook --dir knowledge_base/samples --create
echo "==> sample searches (hybrid: embeddings + BM25 keywords)"
$KBQA kb search handbook "年假没休完可以顺延吗？" -k 2
$KBQA kb search handbook "Who approves an expense above CNY 5,000?" -k 2
echo "==> questions answered from the knowledge base by the bundled chat model (Qwen2.5-Coder-1.5B-Instruct,"
echo "    llama.cpp on the CPU); under each source, » marks the sentence that best supports the answer"
$KBQA ask "Who approves an expense above CNY 5,000?" --kb handbook --temperature 0 --max-tokens 120
$KBQA ask "年假没休完可以顺延吗？" --kb handbook --temperature 0 --max-tokens 120
echo "==> serving on http://127.0.0.1:7861: the web page at /, the API (OpenAPI docs at /docs); Ctrl-C stops it"
exec $KBQA serve
