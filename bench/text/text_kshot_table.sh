#!/usr/bin/env bash
# The k-shot table for text (issue 20), through the service API: does a
# pretrained transformer-small transfer to WordNet categories it never saw?
#
# The same design as bench/text/text_kshot.cc (in process), run as a user
# would, with kaizenctl against a kaizen-server:
#   - group A (every WordNet lexicographer category with 400 glosses or more
#     but the eight of group B) pretrains gl-base: transformer-small with
#     SCRATCH, the server training a SentencePiece tokenizer on the job's
#     glosses first, validated on 20 other glosses per category; with MLM=1
#     also gl-mlm, masked-language modelling (MASKED_LM) on the same glosses;
#   - group B (noun.animal, noun.body, noun.food, noun.location, noun.plant,
#     noun.time, verb.motion, verb.communication) is the new task: for each
#     k in SHOTS and each seed in SEEDS, k glosses per class drawn by the seed
#     (nested: a seed's 20 hold its 5), trained with FEATURE_EXTRACTION,
#     FINE_TUNE and FULL from each pretrained base and with SCRATCH (from
#     gl-base: the same architecture and tokenizer, fresh weights);
#   - every job names gl-test (TEST_PER_CLASS other glosses per class, never
#     trained on) as its test_dataset; the server evaluates the job's final
#     version on it and stores the result, which is what the table reports.
# Nothing is chosen on gl-test. The few-shot jobs run Kaizen's text defaults
# per strategy with batch 16 and the in-process harness's step rule: epochs
# = ceil(STEPS / batches per epoch), between 5 and 100.
#
# The output: a markdown table (mean ± sd over the seeds) and one verdict
# per k computed from it (the best pretrained arm against SCRATCH; a gap
# within the larger of their seed spreads is no verdict either way).
#
# Usage: [SHOTS="5 20 100"] [SEEDS="1 2 3"] [MLM=1] [PRETRAIN_PER_CLASS=1500]
#        [PRETRAIN_EPOCHS=2] [MLM_EPOCHS=8] [TEST_PER_CLASS=100] [STEPS=200]
#        [MAX_LENGTH=64] bench/text/text_kshot_table.sh
# KAIZEN_BIN_DIR=DIR runs the binaries in DIR instead of building them.
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/common.sh
SHOTS="${SHOTS:-5 20 100}"
SEEDS="${SEEDS:-1 2 3}"
MLM="${MLM:-1}"
PRETRAIN_PER_CLASS="${PRETRAIN_PER_CLASS:-1500}"
PRETRAIN_EPOCHS="${PRETRAIN_EPOCHS:-2}"
MLM_EPOCHS="${MLM_EPOCHS:-8}"
TEST_PER_CLASS="${TEST_PER_CLASS:-100}"
STEPS="${STEPS:-200}"
MAX_LENGTH="${MAX_LENGTH:-64}"
BATCH=16
PY=/usr/bin/python3
for v in PRETRAIN_PER_CLASS PRETRAIN_EPOCHS MLM_EPOCHS TEST_PER_CLASS STEPS MAX_LENGTH; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "text_kshot_table: $v must be a positive integer" >&2; exit 2; }
done
bench_binaries text_kshot_table
KEEP="${TEXT_KSHOT_RESULTS:-bench/runs/history/text_kshot_results.tsv}"
mkdir -p "$(dirname "$KEEP")"

bench_server

# The sets, as CSV (text,label). Group B's pools are shuffled once with a
# fixed seed; the last TEST_PER_CLASS of each are the test glosses and each
# seed draws its k-shot sets from the rest.
$PY - "$WORK" "$PRETRAIN_PER_CLASS" "$TEST_PER_CLASS" "$SHOTS" "$SEEDS" <<'PYEOF'
import random, sys
sys.path.insert(0, "tools")
from make_wordnet_text_sets import GROUP_B, load_glosses, pretrain_sets, write
out, pretrain_n, test_n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
shots, seeds = [int(k) for k in sys.argv[4].split()], [int(s) for s in sys.argv[5].split()]
by_category = load_glosses()
pretrain, pretrain_val = pretrain_sets(by_category, pretrain_n)
write(f"{out}/pretrain.csv", pretrain)
write(f"{out}/pretrain-val.csv", pretrain_val)
pool_rng = random.Random(20261203)
pools, test = {}, []
for category in GROUP_B:
    pool = sorted(set(by_category[category]))
    pool_rng.shuffle(pool)
    if len(pool) < test_n + max(shots):
        sys.exit(f"{category} has {len(pool)} glosses, fewer than {test_n + max(shots)}")
    test += [(t, category) for t in pool[-test_n:]]
    pools[category] = pool[:-test_n]
write(f"{out}/test.csv", test)
for seed in seeds:
    drawn = {}
    for category in GROUP_B:
        pool = list(pools[category])
        random.Random(seed * 1000003 + GROUP_B.index(category)).shuffle(pool)
        drawn[category] = pool
    for k in shots:
        write(f"{out}/few{k}-s{seed}.csv", [(t, c) for c in GROUP_B for t in drawn[c][:k]])
print(f"group A: {len(pretrain)} glosses of {len({c for _, c in pretrain})} categories "
      f"(+{len(pretrain_val)} validation); group B: {len(GROUP_B)} categories, "
      f"{len(test)} test glosses", file=sys.stderr)
PYEOF
upload() { CTL datasets upload "$1" "$2" >/dev/null; }
upload gl-pretrain "$WORK/pretrain.csv"
upload gl-pretrain-val "$WORK/pretrain-val.csv"
upload gl-test "$WORK/test.csv"
for k in $SHOTS; do
  for seed in $SEEDS; do upload "gl-few$k-s$seed" "$WORK/few$k-s$seed.csv"; done
done

job_json() { CTL --output=json jobs get "$1"; }
run_job() {  # output strategy base dataset extra-args...
  local out=$1 strategy=$2 base=$3 dataset=$4; shift 4
  local id
  id=$(CTL --output=json finetune start --base="$base" --dataset="$dataset" --output_model="$out" \
        --strategy="$strategy" "$@" | $PY -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  CTL jobs watch "$id" >"$WORK/$out.watch" 2>&1 || { cat "$WORK/$out.watch" >&2; return 1; }
  [ "$(job_json "$id" | $PY -c 'import json,sys; print(json.load(sys.stdin)["state"])')" = \
    JOB_STATE_SUCCEEDED ] || { echo "job $out did not succeed:" >&2; job_json "$id" >&2; return 1; }
  echo "$id"
}
seconds_of() {  # job id: its wall seconds
  job_json "$1" | $PY -c '
import json, sys
from datetime import datetime
j = json.load(sys.stdin)
t = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))
print("%.0f" % (t(j["endTime"]) - t(j["startTime"])).total_seconds())'
}

echo "pretraining gl-base: transformer-small, SCRATCH on group A, $PRETRAIN_EPOCHS epochs..." >&2
base_id=$(run_job gl-base scratch transformer-small gl-pretrain --epochs="$PRETRAIN_EPOCHS" \
  --max_length="$MAX_LENGTH" --seed=1 --validation_dataset=gl-pretrain-val)
base_s=$(seconds_of "$base_id")
base_acc=$(job_json "$base_id" | $PY -c \
  'import json,sys; print("%.3f" % json.load(sys.stdin)["history"][-1].get("valAccuracy", 0))')
echo "gl-base: validation accuracy $base_acc in $base_s s" >&2
BASES="gl-base"
mlm_note=""
if [ "$MLM" != 0 ]; then
  echo "pretraining gl-mlm: transformer-small, MASKED_LM on group A, $MLM_EPOCHS epochs..." >&2
  mlm_id=$(run_job gl-mlm masked_lm transformer-small gl-pretrain --epochs="$MLM_EPOCHS" \
    --max_length="$MAX_LENGTH" --seed=1)
  mlm_s=$(seconds_of "$mlm_id")
  mlm_loss=$(job_json "$mlm_id" | $PY -c '
import json, sys
h = json.load(sys.stdin)["history"]
print("%.2f to %.2f" % (h[0].get("trainLoss", 0), h[-1].get("trainLoss", 0)))')
  echo "gl-mlm: training loss $mlm_loss in $mlm_s s" >&2
  BASES="gl-base gl-mlm"
  mlm_note="; gl-mlm: MASKED_LM $MLM_EPOCHS epochs in $mlm_s s, training loss $mlm_loss nats"
fi
printf '# %s commit %s gl-base val %s in %ss%s\n' "$(date -u +%FT%TZ)" "$(bench_commit)" \
  "$base_acc" "$base_s" "$mlm_note" >>"$KEEP"

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
for k in $SHOTS; do
  per_epoch=$(((k * 8 + BATCH - 1) / BATCH))
  epochs=$(((STEPS + per_epoch - 1) / per_epoch))
  [ "$epochs" -lt 5 ] && epochs=5
  [ "$epochs" -gt 100 ] && epochs=100
  for seed in $SEEDS; do
    arms=("scratch gl-base")
    for base in $BASES; do
      for strategy in feature_extraction fine_tune full; do arms+=("$strategy $base"); done
    done
    for arm in "${arms[@]}"; do
      read -r strategy base <<<"$arm"
      out="k$k-s$seed-$strategy-$base"; out=${out//_/-}
      id=$(run_job "$out" "$strategy" "$base" "gl-few$k-s$seed" --epochs="$epochs" \
             --batch_size="$BATCH" --seed="$seed" --test_dataset=gl-test)
      name=$strategy; [ "$strategy" != scratch ] && name="$strategy ($base)"
      acc=$(CTL --output=json models get "$out:$(job_json "$id" | $PY -c \
        'import json,sys; print(json.load(sys.stdin)["latestVersion"])')" | $PY -c \
        'import json,sys; print("%.4f" % json.load(sys.stdin)["testEvaluation"]["accuracy"])')
      row=$(printf '%s\t%s\t%s\t%s\t%s\t%s' "$k" "$name" "$seed" "$acc" "$(seconds_of "$id")" "$epochs")
      echo "$row" >>"$RESULTS"
      echo "$row" >>"$KEEP"
      echo "k=$k seed $seed $name, $epochs epochs: test accuracy $acc" >&2
    done
  done
done

$PY - "$RESULTS" "$base_acc" "$base_s" "$PRETRAIN_EPOCHS" "$mlm_note" <<'PYEOF'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
shots = sorted({int(r[0]) for r in rows})
arms = list(dict.fromkeys(r[1] for r in rows))
seeds = len({r[2] for r in rows})
def accs(k, arm): return [float(r[3]) for r in rows if int(r[0]) == k and r[1] == arm]
def mean(v): return statistics.mean(v)
def sd(v): return statistics.stdev(v) if len(v) > 1 else 0.0
print(f"Test accuracy on gl-test (8 new categories, chance 0.125), mean ± sd over {seeds} seeds, "
      f"through the API; gl-base: SCRATCH {sys.argv[4]} epochs in {sys.argv[3]} s, validation "
      f"accuracy {sys.argv[2]}{sys.argv[5]}.\n")
print("| labelled per class | " + " | ".join(arms) + " | epochs | seconds per job (median) |")
print("|---" * (len(arms) + 3) + "|")
for k in shots:
    cells = [f"{mean(accs(k, a)):.3f} ± {sd(accs(k, a)):.3f}" for a in arms]
    ks = [r for r in rows if int(r[0]) == k]
    print(f"| {k} | " + " | ".join(cells) +
          f" | {ks[0][5]} | {statistics.median(float(r[4]) for r in ks):.0f} |")
print()
for k in shots:
    scratch = accs(k, "scratch")
    others = [(mean(accs(k, a)), a) for a in arms if a != "scratch"]
    if not scratch or not others:
        continue
    best_mean, best = max(others)
    gain = 100 * (best_mean - mean(scratch))
    spread = 100 * max(sd(accs(k, best)), sd(scratch))
    verdict = ("is within the seeds' spread of" if abs(gain) <= spread
               else "beats" if gain > 0 else "trails")
    print(f"- {k} per class: the best pretrained arm, {best}, {verdict} SCRATCH: {gain:+.1f} points "
          f"({best_mean:.3f} vs {mean(scratch):.3f}, larger sd {spread:.1f} points).")
PYEOF
