#!/usr/bin/env bash
# Time to accuracy (issue 18, item 6): the wall time a user waits for a
# fine-tuned model of a given test accuracy, Kaizen against the textbook
# PyTorch transfer-learning script (bench/e2e/tta_pytorch.py: ImageFolder +
# DataLoader + the pretrained model with a new head + Adam), on the same image
# folder and the same pretrained base, for FEATURE_EXTRACTION and FINE_TUNE.
#
# Set-up (not timed): kaizen-server on a temporary data dir and a free
# loopback port; a base pretrained through the API (BASE_ARCH, SCRATCH,
# PRETRAIN_EPOCHS epochs on the first PRETRAIN_PER_CLASS training images of
# each of Fashion-MNIST's classes 0-4; or BASE_MODEL_FILE, uploaded), and the
# same file downloaded for PyTorch; the training folder (the first PER_CLASS
# training images of each of classes 5-9 as PNGs in class folders) and the
# test folder (all 5,000 test images of classes 5-9), the test folder
# uploaded to Kaizen as a dataset.
#
# Each round, for each strategy, the runners in turn (the order rotates):
#   kaizen        `kaizenctl datasets upload` of the training folder, then
#                 `kaizenctl finetune start --watch` with Kaizen's defaults
#                 (only the strategy, EPOCHS, the seed and keep_checkpoints
#                 given); the clock starts before the upload, and each
#                 checkpoint (a servable model version) is placed at the
#                 arrival of its CheckpointSaved event. After the job every
#                 version is scored with `kaizenctl models evaluate` on the
#                 test dataset (not timed).
#   pytorch-wN    bench/e2e/tta_pytorch.py with DataLoader num_workers N (from
#                 WORKERS), EPOCHS epochs, the whole process timed (imports and
#                 dataset build included), each epoch's model scored on the test
#                 folder with the clock stopped.
#   kaizen-noaug  (KAIZEN_VARIANTS=noaug) as kaizen, with --augment=off.
# Each Kaizen runner is compared with each PyTorch runner round by round
# (bench/e2e/tta_summary.py): the target is the lower of the two runners' best
# test accuracies, so both reach it; a runner's time to accuracy is the time
# of its first model at or above the target. It prints, per strategy and
# pair, the medians over rounds of the target and of both times and the
# median of per-round ratios PyTorch / Kaizen (> 1: Kaizen is faster) against
# the goals (FEATURE_EXTRACTION >= 3x, FINE_TUNE >= 1.5x), and
# appends one JSON line per run to $TTA_RESULTS with the date, commit and
# machine.
#
# Usage: bench/e2e/time_to_accuracy.sh
# Settings (environment):
#   R=3  PER_CLASS=200  EPOCHS=10  WORKERS="2"  SEED=1 (round r uses SEED + r - 1)
#   STRATEGIES="feature_extraction fine_tune"
#   KAIZEN_VARIANTS=    "noaug" adds the runner kaizen-noaug: Kaizen's defaults and
#                       --augment=off (for FINE_TUNE, the frozen-prefix cache)
#   BASE_ARCH=resnet-small  PRETRAIN_PER_CLASS=2000  PRETRAIN_EPOCHS=2  BASE_MODEL_FILE=
#   TTA_RESULTS=bench/runs/history/tta_results.jsonl
#   KAIZEN_BIN_DIR=DIR  prebuilt kaizen-server and kaizenctl; otherwise
#                       scripts/build.sh builds them in ${KAIZEN_BUILD_DIR:-build}
# Quick check: R=1 PER_CLASS=10 EPOCHS=2 PRETRAIN_PER_CLASS=50 PRETRAIN_EPOCHS=1 TEST_PER_CLASS=50 \
#   KAIZEN_BIN_DIR=build TTA_RESULTS=/tmp/tta.jsonl bench/e2e/time_to_accuracy.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/common.sh
R="${R:-3}"
PER_CLASS="${PER_CLASS:-200}"
TEST_PER_CLASS="${TEST_PER_CLASS:-1000}"
EPOCHS="${EPOCHS:-10}"
WORKERS="${WORKERS:-2}"
SEED="${SEED:-1}"
STRATEGIES="${STRATEGIES:-feature_extraction fine_tune}"
KAIZEN_VARIANTS="${KAIZEN_VARIANTS:-}"
for v in $KAIZEN_VARIANTS; do
  case $v in noaug) ;;
    *) echo "time_to_accuracy: KAIZEN_VARIANTS takes noaug, not '$v'" >&2; exit 2 ;;
  esac
done
BASE_ARCH="${BASE_ARCH:-resnet-small}"
PRETRAIN_PER_CLASS="${PRETRAIN_PER_CLASS:-2000}"
PRETRAIN_EPOCHS="${PRETRAIN_EPOCHS:-2}"
RESULTS="${TTA_RESULTS:-bench/runs/history/tta_results.jsonl}"
FASHION_DIR="${FASHION_DIR:-/usr/share/datasets/fashion-mnist}"
PY=/usr/bin/python3
# libgomp spins by default, which on a shared 2-core machine makes a second
# thread slower than none (bench/README.md, "Threads"); both sides alike.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
for s in $STRATEGIES; do
  case $s in feature_extraction | fine_tune) ;;
    *) echo "time_to_accuracy: STRATEGIES takes feature_extraction and fine_tune, not '$s'" >&2; exit 2 ;;
  esac
done

bench_binaries time_to_accuracy
bench_server
now() { date +%s.%N; }

# Folders: training images of classes 5-9, test images of the same classes.
NEW=5,6,7,8,9
$PY tools/make_image_folder.py "$FASHION_DIR" "$WORK/train" "$PER_CLASS" --split=train \
  --classes=$NEW >&2
$PY tools/make_image_folder.py "$FASHION_DIR" "$WORK/test" "$TEST_PER_CLASS" --classes=$NEW >&2
CTL datasets upload tta-test "$WORK/test" >/dev/null

# The base: pretrained on classes 0-4, or a file from an earlier run.
if [ -n "${BASE_MODEL_FILE:-}" ]; then
  CTL models upload base "$BASE_MODEL_FILE" >/dev/null
  PRETRAIN="uploaded $BASE_MODEL_FILE"
else
  $PY - "$WORK" "$PRETRAIN_PER_CLASS" "$FASHION_DIR" <<'PYEOF'
import sys
sys.path.insert(0, "tools")
from make_fashion_subsets import load, write
tr, trl = load(sys.argv[3], "train")
print("pretraining images:", write(sys.argv[1], "pre", tr, trl, [0, 1, 2, 3, 4], int(sys.argv[2])),
      file=sys.stderr)
PYEOF
  CTL datasets upload tta-pre "$WORK/pre-images" --format=idx --labels="$WORK/pre-labels" \
    --class_names=t-shirt,trouser,pullover,dress,coat >/dev/null
  t0=$(now)
  CTL finetune start --base="$BASE_ARCH" --dataset=tta-pre --output_model=base --strategy=scratch \
    --epochs="$PRETRAIN_EPOCHS" --seed=1 --watch >"$WORK/pretrain.log" 2>&1 ||
    { cat "$WORK/pretrain.log" >&2; exit 1; }
  PRETRAIN="SCRATCH $BASE_ARCH, $PRETRAIN_EPOCHS epochs on $((5 * PRETRAIN_PER_CLASS)) images of classes 0-4, $(printf '%.0f' "$(echo "$(now) - $t0" | bc)") s"
fi
CTL models download base "$WORK/base.pt" >/dev/null
echo "base: $PRETRAIN" >&2

RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)-$$
COMMIT=$(bench_commit)
CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
TORCH_VERSION=$($PY -c 'import torch, torchvision; print(torch.__version__, "/ torchvision", torchvision.__version__)')
mkdir -p "$(dirname "$RESULTS")"
RUN_LINES="$WORK/run.jsonl"
: >"$RUN_LINES"
export RUN_ID COMMIT CPU_MODEL TORCH_VERSION PER_CLASS TEST_PER_CLASS EPOCHS BASE_ARCH PRETRAIN WORK
echo "time to accuracy $RUN_ID: $((5 * PER_CLASS)) training PNGs, $((5 * TEST_PER_CLASS)) test" \
  "PNGs, $EPOCHS epochs, $R round(s), strategies: $STRATEGIES, PyTorch workers: $WORKERS" >&2
echo "machine: $(nproc) x $CPU_MODEL; commit $COMMIT; torch $TORCH_VERSION;" \
  "OMP_WAIT_POLICY=$OMP_WAIT_POLICY; load $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# record RUNNER STRATEGY ROUND SEED RC SECONDS POINTS_FILE: one JSON line.
# POINTS_FILE holds "epoch t accuracy" lines.
record() {
  RUNNER=$1 STRATEGY=$2 ROUND=$3 RUN_SEED=$4 RC=$5 SECONDS_TOTAL=$6 POINTS=$7 \
    DATE=$(date -u +%FT%TZ) $PY - <<'PYEOF' >>"$RUN_LINES"
import json, os
e = os.environ
points = []
for line in open(e["POINTS"]):
    try:  # a model that could not be scored leaves a short line (and rc 1)
        epoch, t, acc = line.split()
        points.append({"epoch": int(epoch), "t": float(t), "test_accuracy": float(acc)})
    except ValueError:
        pass
extra = {}
if os.path.exists(e["WORK"] + "/extra.json"):
    extra = json.load(open(e["WORK"] + "/extra.json"))
print(json.dumps({
    "run_id": e["RUN_ID"], "date": e["DATE"], "commit": e["COMMIT"],
    "nproc": len(os.sched_getaffinity(0)), "cpu_model": e["CPU_MODEL"],
    "loadavg": [round(x, 2) for x in os.getloadavg()], "torch": e["TORCH_VERSION"],
    "omp_wait_policy": e["OMP_WAIT_POLICY"], "base": e["PRETRAIN"], "base_arch": e["BASE_ARCH"],
    "train_images": 5 * int(e["PER_CLASS"]), "test_images": 5 * int(e["TEST_PER_CLASS"]),
    "epochs": int(e["EPOCHS"]), "runner": e["RUNNER"], "strategy": e["STRATEGY"],
    "round": int(e["ROUND"]), "seed": int(e["RUN_SEED"]), "rc": int(e["RC"]),
    "total_seconds": float(e["SECONDS_TOTAL"]), "points": points, **extra}))
PYEOF
  tail -n 1 "$RUN_LINES" >>"$RESULTS"
  $PY -c '
import json, sys
d = json.loads(sys.argv[1])
best = max((p["test_accuracy"] for p in d["points"]), default=float("nan"))
print("  round %d  %-18s %-12s total %6.1f s  %d models, best test accuracy %.4f%s" % (
    d["round"], d["strategy"], d["runner"], d["total_seconds"], len(d["points"]), best,
    "" if d["rc"] == 0 else "  (exit %d)" % d["rc"]))' "$(tail -n 1 "$RUN_LINES")" >&2
}

run_kaizen() {  # RUNNER STRATEGY ROUND SEED [FLAGS...]
  local runner=$1 strategy=$2 round=$3 seed=$4 rc=0 t0 t2
  shift 4
  local ds="tta-$runner-$round-${strategy//_/-}" out="tta-$runner-$round-${strategy//_/-}-out"
  rm -f "$WORK/watch.txt" "$WORK/points.txt" "$WORK/extra.json" "$WORK/upload.log" \
    "$WORK/watch.err"
  t0=$(now)
  CTL datasets upload "$ds" "$WORK/train" >"$WORK/upload.log" 2>&1 || rc=$?
  local t1; t1=$(now)
  if [ $rc -eq 0 ]; then
    # Each line of the JSON Lines stream gets its arrival time (epoch seconds).
    CTL --output=json finetune start --base=base --dataset="$ds" --output_model="$out" \
      --strategy="$strategy" --epochs="$EPOCHS" --seed="$seed" \
      --keep_checkpoints=$((EPOCHS + 1)) "$@" --watch 2>"$WORK/watch.err" |
      $PY -u -c 'import sys, time
for line in sys.stdin: sys.stdout.write("%.6f %s" % (time.time(), line)); sys.stdout.flush()' \
      >"$WORK/watch.txt" || rc=$?
  fi
  t2=$(now)
  [ $rc -eq 0 ] || cat "$WORK/upload.log" "$WORK/watch.err" >&2 2>/dev/null || true
  # Every checkpoint: its epoch, its arrival on the clock, its test accuracy.
  $PY - "$WORK/watch.txt" "$t0" "$out" >"$WORK/versions.txt" <<'PYEOF' || rc=$?
import json, sys
t0 = float(sys.argv[2])
for line in open(sys.argv[1]):
    stamp, _, text = line.partition(" ")
    event = json.loads(text)
    c = event.get("checkpoint")
    if c:
        print(c.get("epoch", 0), float(stamp) - t0, sys.argv[3] + ":" + str(c["version"]))
PYEOF
  : >"$WORK/points.txt"
  local epoch t version
  while read -r epoch t version; do
    CTL --output=json models evaluate "$version" tta-test >"$WORK/eval.json" || { rc=1; continue; }
    echo "$epoch $t $($PY -c 'import json, sys; print(json.load(open(sys.argv[1])).get("accuracy", 0))' \
      "$WORK/eval.json")" >>"$WORK/points.txt"
  done <"$WORK/versions.txt"
  printf '{"upload_seconds": %.3f}\n' "$(echo "$t1 - $t0" | bc)" >"$WORK/extra.json"
  record "$runner" "$strategy" "$round" "$seed" "$rc" "$(echo "$t2 - $t0" | bc)" "$WORK/points.txt"
  CTL models delete "$out" >/dev/null 2>&1 || true
  CTL datasets delete "$ds" >/dev/null 2>&1 || true
}

run_pytorch() {  # WORKERS STRATEGY ROUND SEED
  local workers=$1 strategy=$2 round=$3 seed=$4 rc=0 t0
  rm -f "$WORK/extra.json"
  t0=$(now)
  $PY bench/e2e/tta_pytorch.py --model="$WORK/base.pt" --train_folder="$WORK/train" \
    --test_folder="$WORK/test" --strategy="$strategy" --epochs="$EPOCHS" --workers="$workers" \
    --seed="$seed" >"$WORK/pt.jsonl" 2>"$WORK/pt.err" || { rc=$?; cat "$WORK/pt.err" >&2; }
  # The script's clock starts at its first line and stops while it scores;
  # the interpreter's start-up before that line (from our clock to its
  # first line's wall time) is added to every point.
  $PY - "$WORK/pt.jsonl" "$t0" "$WORK/points.txt" <<'PYEOF' >"$WORK/total.txt"
import json, sys
rows = []
for line in open(sys.argv[1]):
    try:
        rows.append(json.loads(line))
    except ValueError:  # a line cut short by a crash
        pass
setup = next((r for r in rows if r["event"] == "setup"), None)
done = next((r for r in rows if r["event"] == "done"), None)
offset = setup["process_start_wall"] - float(sys.argv[2]) if setup else 0.0
with open(sys.argv[3], "w") as out:
    for r in rows:
        if r["event"] == "epoch":
            print(r["epoch"], r["t"] + offset, r["test_accuracy"], file=out)
print(done["t"] + offset if done else 0.0)
PYEOF
  record "pytorch-w$workers" "$strategy" "$round" "$seed" "$rc" "$(cat "$WORK/total.txt")" \
    "$WORK/points.txt"
}

RUNNERS=(kaizen)
for v in $KAIZEN_VARIANTS; do RUNNERS+=("kaizen-$v"); done
for w in $WORKERS; do RUNNERS+=("pytorch-w$w"); done
N=${#RUNNERS[@]}
for round in $(seq 1 "$R"); do
  seed=$((SEED + round - 1))
  for strategy in $STRATEGIES; do
    for i in $(seq 0 $((N - 1))); do
      runner=${RUNNERS[$(( (i + round - 1) % N ))]}
      case $runner in
        kaizen) run_kaizen kaizen "$strategy" "$round" "$seed" ;;
        kaizen-noaug) run_kaizen "$runner" "$strategy" "$round" "$seed" --augment=off ;;
        *) run_pytorch "${runner#pytorch-w}" "$strategy" "$round" "$seed" ;;
      esac
    done
  done
done

$PY bench/e2e/tta_summary.py "$RUN_LINES"
echo "raw results appended to $RESULTS (run_id $RUN_ID)" >&2
