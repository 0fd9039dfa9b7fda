#!/usr/bin/env bash
# Issue 15's INCREMENTAL numbers, through the service API: a base trained
# with SCRATCH on OLD_PER_CLASS Fashion-MNIST training images of each of
# classes 0-4, then one increment of NEW_PER_CLASS images of each of classes
# 5-9, run twice from the same base version:
#   - "incremental": Kaizen's defaults (rehearsal memory + distillation from
#     the previous model on the old classes);
#   - "plain": the same job with both protections off (--no_rehearsal
#     --no_distillation): plain fine-tuning of the grown model on the new
#     data alone.
# Every job names the test images of all 10 classes (TEST_PER_CLASS of
# each) as its test_dataset; the server scores the base version (before) and
# the job's latest version (after) on them once the job ends and reports
# old-class, new-class and all-class accuracy and the forgetting
# (Job.incremental). Nothing selects on the test set.
#
# Usage: [SEEDS="1 2 3"] [OLD_PER_CLASS=1000] [NEW_PER_CLASS=1000]
#        [TEST_PER_CLASS=1000] [BASE_ARCH=cnn-small] [EPOCHS=default]
#        [BASE_EPOCHS=default] bench/incremental/incremental_table.sh
# KAIZEN_BIN_DIR: prebuilt kaizen-server and kaizenctl (see bench/common.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/common.sh
SEEDS="${SEEDS:-1 2 3}"
OLD_PER_CLASS="${OLD_PER_CLASS:-1000}"
NEW_PER_CLASS="${NEW_PER_CLASS:-1000}"
TEST_PER_CLASS="${TEST_PER_CLASS:-1000}"
BASE_ARCH="${BASE_ARCH:-cnn-small}"
EPOCHS="${EPOCHS:-}"
BASE_EPOCHS="${BASE_EPOCHS:-}"
PY=/usr/bin/python3
bench_binaries incremental_table
KEEP="${INCREMENTAL_RESULTS:-bench/runs/history/incremental_results.tsv}"
mkdir -p "$(dirname "$KEEP")"

bench_server

# IDX subsets; labels index the class list given at upload.
$PY - "$WORK" "$OLD_PER_CLASS" "$NEW_PER_CLASS" "$TEST_PER_CLASS" <<'PYEOF'
import sys
sys.path.insert(0, "tools")
from make_fashion_subsets import load, write
src = "/usr/share/datasets/fashion-mnist"
out, old_n, new_n, test_n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
tr, trl = load(src, "train"); te, tel = load(src, "t10k")
for name, images, labels, classes, n in [("old", tr, trl, [0, 1, 2, 3, 4], old_n),
                                         ("new", tr, trl, [5, 6, 7, 8, 9], new_n),
                                         ("test", te, tel, list(range(10)), test_n)]:
    print(name, write(out, name, images, labels, classes, n), "images", file=sys.stderr)
PYEOF
OLD=t-shirt,trouser,pullover,dress,coat
NEW=sandal,shirt,sneaker,bag,ankle-boot
CTL datasets upload fm-old "$WORK/old-images" --format=idx --labels="$WORK/old-labels" --class_names=$OLD >/dev/null
CTL datasets upload fm-new "$WORK/new-images" --format=idx --labels="$WORK/new-labels" --class_names=$NEW >/dev/null
CTL datasets upload fm-test "$WORK/test-images" --format=idx --labels="$WORK/test-labels" \
  --class_names="$OLD,$NEW" >/dev/null

run_job() {  # output strategy base dataset extra-args... ; prints the job id
  local out=$1 strategy=$2 base=$3 dataset=$4; shift 4
  local id
  id=$(CTL --output=json finetune start --base="$base" --dataset="$dataset" --output_model="$out" \
        --strategy="$strategy" "$@" | $PY -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  CTL jobs watch "$id" >"$WORK/$out.watch" 2>&1 || { cat "$WORK/$out.watch" >&2; return 1; }
  echo "$id"
}

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
printf '# %s commit %s base %s old %s new %s test %s per class\n' "$(date -u +%FT%TZ)" \
  "$(bench_commit)" "$BASE_ARCH" "$OLD_PER_CLASS" "$NEW_PER_CLASS" "$TEST_PER_CLASS" >>"$KEEP"
epoch_args=(); [ -n "$EPOCHS" ] && epoch_args=(--epochs="$EPOCHS")
base_args=(); [ -n "$BASE_EPOCHS" ] && base_args=(--epochs="$BASE_EPOCHS")
for seed in $SEEDS; do
  echo "seed $seed: base ($BASE_ARCH, SCRATCH on classes 0-4)..." >&2
  run_job "base-$seed" scratch "$BASE_ARCH" fm-old "${base_args[@]}" --seed="$seed" >/dev/null
  for variant in incremental plain; do
    extra=(); [ "$variant" = plain ] && extra=(--no_rehearsal --no_distillation)
    t0=$(date +%s.%N)
    id=$(run_job "$variant-$seed" incremental "base-$seed" fm-new "${epoch_args[@]}" \
           --seed="$seed" --test_dataset=fm-test "${extra[@]}")
    secs=$(echo "$(date +%s.%N) - $t0" | bc)
    CTL --output=json jobs get "$id" | $PY -c '
import json, sys
j = json.load(sys.stdin)
r = j.get("incremental", {})
if r.get("evaluatedOn", "") == "":
    sys.exit("job %s has no measured incremental result: %s" % (j["id"], json.dumps(r)))
g = lambda k: float(r.get(k, 0))
print("\t".join([sys.argv[1], sys.argv[2]] + ["%.4f" % g(k) for k in (
    "oldAccuracyBefore", "oldAccuracyAfter", "newAccuracyAfter", "allAccuracyAfter", "forgetting")]
    + [str(r.get("memorySize", 0)), "%.0f" % float(sys.argv[3]),
       str(j["resolvedHyperparameters"]["epochs"])]))
' "$seed" "$variant" "$secs" >>"$RESULTS"
    tail -1 "$RESULTS" >&2
    tail -1 "$RESULTS" >>"$KEEP"
  done
done

$PY - "$RESULTS" "$BASE_ARCH" "$OLD_PER_CLASS" "$NEW_PER_CLASS" "$TEST_PER_CLASS" <<'PYEOF'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
arch, old_n, new_n, test_n = sys.argv[2:6]
print(f"\nIncremental table: {arch} base trained on {old_n} images of each of Fashion-MNIST "
      f"classes 0-4, then {new_n} images of each of classes 5-9; accuracy (%) on {test_n} test "
      f"images per class of all 10 classes. old = classes 0-4, new = 5-9; before = the base "
      f"version, after = the job's latest version; forgetting = old before - old after.\n")
cols = ["old before", "old after", "new after", "all after", "forgetting"]
def fmt(vals):
    m = statistics.mean(vals)
    s = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{m:5.1f} ±{s:4.1f}"
print(f"{'variant':<13}" + "".join(f"{c:>14}" for c in cols) + f"{'memory':>8}{'job s':>7}{'seeds':>6}")
for v in ("incremental", "plain"):
    r = [x for x in rows if x[1] == v]
    if not r: continue
    print(f"{v:<13}" + "".join(f"{fmt([100 * float(x[2 + i]) for x in r]):>14}" for i in range(5))
          + f"{r[0][7]:>8}{statistics.median(float(x[8]) for x in r):>7.0f}{len(r):>6}")
inc = [x for x in rows if x[1] == "incremental"]
if inc:
    all_after = statistics.mean(100 * float(x[5]) for x in inc)
    drop = statistics.mean(100 * float(x[6]) for x in inc)
    print(f"\nincremental: all-class accuracy {all_after:.1f}% (target >= 85: "
          f"{'met' if all_after >= 85 else 'not met'}), old-class accuracy lost {drop:.1f} points "
          f"(target <= 8: {'met' if drop <= 8 else 'not met'})")
plain = [x for x in rows if x[1] == "plain"]
if inc and plain:
    p = statistics.mean(100 * float(x[6]) for x in plain)
    print(f"plain fine-tuning on the new data alone forgets {p:.1f} points against {drop:.1f}")
PYEOF
