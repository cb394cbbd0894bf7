#!/usr/bin/env bash
# Train the default model's reader on bench/reader_corpus.py's corpus, then record its curve and its answers
# to held-out documents' questions (bench/bench_reader_curve.py). Runs on any machine; the recipe is the same,
# only the time budgets differ (a GPU run gets through more steps in them).
#
#   bash bench/train_reader.sh CORPUS OUT [TRAIN_SECONDS] [INGEST_SECONDS]
#
# CORPUS: the folder bench/reader_corpus.py made (the store goes in CORPUS/.l2m). OUT: the reader directory;
# OUT/curve.json (+ .png) and OUT/log.txt are written beside the reader's files. The AI Act is ingested
# first, then the code, both stopped after INGEST_SECONDS in all (an ingest resumes without loss, so what was
# written stays; held_out_sources in the reader's JSON names what it was measured on). Pass-key samples come
# from the haystack novels of $L2M_DATA (default ../shared/data).
set -uo pipefail
corpus=$(cd "$1" && pwd) out=$2 train_s=${3:-480} ingest_s=${4:-1200}
repo=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$out"
exec > >(tee -a "$out/log.txt") 2>&1
store="$corpus/.l2m"
start=$SECONDS
timeout "$ingest_s" python3 -m cli ingest "$corpus/ai_act" --root "$corpus" --json
echo "AI Act ingest exit $? after $((SECONDS - start)) s (124: stopped at the budget)"
left=$((ingest_s - (SECONDS - start)))
code=()
for p in "$corpus"/*; do [[ $p == */ai_act || $p == */corpus.json ]] || code+=("$p"); done
if ((left > 0)); then timeout "$left" python3 -m cli ingest "${code[@]}" --store "$store" --json
  echo "code ingest exit $? after $((SECONDS - start)) s (124: stopped at the budget)"; fi
recipe=(--task reader --store "$store" --out "$out" --steps 100000 --batch-size 8 --lr 5e-4 --lora-rank 16
        --reader-mlp --eval-every 50 --eval-examples 32 --held-out 0.15 --per-document 48 --passkeys 128
        --time-budget "$train_s" --seed 0 --json)
python3 -m cli train "${recipe[@]}" || exit 1
python3 "$repo/bench/bench_reader_curve.py" "$out" --store "$store" --max-questions 40 \
  --corpus "$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(", ".join(f"{k} {v}" for k, v in r["packages"].items()) + ", EU AI Act (" + str(r["ai_act_parts"]) + " parts)")' "$corpus/corpus.json")" \
  --command "bash bench/train_reader.sh CORPUS OUT $train_s $ingest_s (l2m train ${recipe[*]})" \
  --out "$out/curve.json"
