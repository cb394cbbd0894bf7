#!/usr/bin/env bash
# Prepare .dev/ (ignored through .git/info/exclude) for the reader's training run on a lent GPU machine
# (bench/device/README.md): wheels the machine's Python lacks, the default model's GGUF in three parts (one
# call carries at most 64 MiB), the training corpus and the pass-key novel, compressed.
#
#   bash bench/device/prepare.sh AI_ACT_TXT
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
grep -qx '/.dev/' .git/info/exclude 2>/dev/null || echo '/.dev/' >> .git/info/exclude
rm -rf .dev && mkdir -p .dev/whl
version() { .venv/bin/pip show "$1" | sed -n 's/^Version: //p'; }
specs=()
for p in transformers tokenizers huggingface_hub httpx2 httpcore2 SQLAlchemy rank-bm25 snowballstemmer tenacity \
         tree-sitter tree-sitter-python gguf truststore; do specs+=("$p==$(version "$p")"); done
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d .dev/whl "${specs[@]}"
gguf=$(.venv/bin/python -c 'from l2m_core.provision import default_gguf_path; print(default_gguf_path())')
split -b 33000000 -d -a 1 "$gguf" .dev/m
tmp=$(mktemp -d)
.venv/bin/python bench/reader_corpus.py --ai-act "$1" --out "$tmp/rc"
tar -cJf .dev/rc.tar.xz -C "$tmp" rc
mkdir -p "$tmp/data/haystack" && cp ../shared/data/haystack/pride.txt "$tmp/data/haystack/"
tar -cJf .dev/data.tar.xz -C "$tmp" data
rm -rf "$tmp"
du -sh .dev/*
