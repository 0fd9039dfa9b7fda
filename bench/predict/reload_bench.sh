#!/usr/bin/env bash
# What reloading every checkpoint of an idle model costs a training job
# (issue 18, item 2), side by side: two kaizen-server processes on the same
# binaries, one that loads every version a job writes (--reload_idle_after_s=0,
# the old behaviour) and one with the default (300 s: a model nobody asks
# for is loaded at the job's end). Both preload (the default), so each
# version of the job's output model is theirs to load. The same FINE_TUNE
# job (built-in BASE, IMAGES Fashion-MNIST images, EPOCHS epochs, a
# checkpoint each epoch) runs on each in turn, REPEATS rounds, alternating
# which goes first, and nobody calls Predict. It prints each server's median
# job seconds (end_time - start_time), the ratio, and the loads of the job's
# model each server logged; then it asks the default server for a
# prediction, which must be answered by the job's last version.
#
# BASE_FILE (a TorchScript classifier, e.g. build/tests/fixtures/resnet18.pt)
# is uploaded to both servers as the base instead of a built-in.
#
# Usage: [IMAGES=1000] [EPOCHS=8] [REPEATS=3] [BASE=resnet-small] [BASE_FILE=F.pt]
#        [KAIZEN_BIN_DIR=DIR] bench/predict/reload_bench.sh
# Smoke: IMAGES=100 EPOCHS=2 REPEATS=1 bench/predict/reload_bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/common.sh
IMAGES=${IMAGES:-1000}
EPOCHS=${EPOCHS:-8}
REPEATS=${REPEATS:-3}
BASE=${BASE:-resnet-small}
BASE_FILE=${BASE_FILE:-}
PY=/usr/bin/python3
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
bench_binaries reload_bench

WORK=$(mktemp -d "${TMPDIR:-/tmp}/reload-bench.XXXXXX")
PIDS=()
cleanup() {
  local rc=$? pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ $rc -ne 0 ]; then
    for log in "$WORK"/*.log; do
      [ -f "$log" ] && { echo "--- last lines of $log ---" >&2; tail -n 15 "$log" >&2; }
    done
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
declare -A PORT
for mode in always idle; do
  PORT[$mode]=$(free_port)
  idle_s=300
  [ "$mode" = always ] && idle_s=0
  "$BUILD/kaizen-server" --data_dir="$WORK/$mode" --host=127.0.0.1 --grpc_port="${PORT[$mode]}" \
    --metrics_port=-1 --threads="$(nproc)" --reload_idle_after_s="$idle_s" \
    >"$WORK/$mode.log" 2>&1 &
  PIDS+=($!)
done
ctl() { local mode=$1; shift; "$BUILD/kaizenctl" --server="127.0.0.1:${PORT[$mode]}" "$@"; }
for mode in always idle; do
  for _ in $(seq 1 150); do ctl "$mode" --timeout=5s datasets list >/dev/null 2>&1 && break; sleep 0.2; done
done

$PY - "$WORK" "$IMAGES" <<'PYEOF'
import sys
sys.path.insert(0, "tools")
from make_fashion_subsets import load, write
out, n = sys.argv[1], int(sys.argv[2])
images, labels = load("/usr/share/datasets/fashion-mnist", "train")
write(out, "train", images, labels, list(range(10)), n // 10)
PYEOF
for mode in always idle; do
  ctl "$mode" datasets upload fm "$WORK/train-images" --format=idx \
    --labels="$WORK/train-labels" >/dev/null
  if [ -n "$BASE_FILE" ]; then ctl "$mode" models upload base "$BASE_FILE" >/dev/null; fi
done
BASE_LABEL=$BASE
if [ -n "$BASE_FILE" ]; then BASE=base; BASE_LABEL=$(basename "$BASE_FILE"); fi

: >"$WORK/jobs.txt"
run_job() {  # MODE ROUND
  local id
  ctl "$1" finetune start --base="$BASE" --dataset=fm --output_model="m$2" \
    --strategy=fine_tune --epochs="$EPOCHS" --seed=1 --watch >"$WORK/job-$1-$2.txt" 2>&1 || {
    cat "$WORK/job-$1-$2.txt" >&2
    exit 1
  }
  id=$(ctl "$1" --output=json jobs list | $PY -c '
import json, sys
jobs = json.load(sys.stdin)["jobs"]
print([j["id"] for j in jobs if j["request"]["outputModel"] == sys.argv[1]][0])' "m$2")
  ctl "$1" --output=json jobs get "$id" | $PY -c '
import datetime, json, sys
j = json.load(sys.stdin)
t = lambda s: datetime.datetime.fromisoformat(s)  # Python 3.11: "Z", 9 digits
print(sys.argv[1], sys.argv[2], (t(j["endTime"]) - t(j["startTime"])).total_seconds(),
      j["state"], j.get("latestVersion", "0"))' "$1" "$2" >>"$WORK/jobs.txt"
}
for r in $(seq 1 "$REPEATS"); do
  if (( r % 2 )); then run_job always "$r"; run_job idle "$r"; else run_job idle "$r"; run_job always "$r"; fi
done

# Nobody asked meanwhile; the first request is answered by the job's last
# version, loaded at the job's end.
last=$(awk '$1 == "idle" && $2 == 1 {print $5}' "$WORK/jobs.txt")
$PY -c '
from PIL import Image
Image.new("L", (28, 28), 128).save("'"$WORK"'/grey.png")'
served=$(ctl idle --output=json predict m1 "$WORK/grey.png" | $PY -c '
import json, sys
print(json.load(sys.stdin)["version"])')

COMMIT=$(bench_commit) $PY - "$WORK/jobs.txt" "$WORK" "$IMAGES" "$EPOCHS" "$BASE_LABEL" "$last" "$served" <<'PYEOF'
import os, statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
work, images, epochs, base, last, served = sys.argv[2:8]
for r in rows:
    assert r[3] == "JOB_STATE_SUCCEEDED", r
def loads(mode):
    return sum(1 for l in open(f"{work}/{mode}.log")
               if '"model version loaded"' in l and '"model":"m' in l)
med = {m: statistics.median(float(r[2]) for r in rows if r[0] == m) for m in ("always", "idle")}
print(f"reload of idle models, commit {os.environ['COMMIT']}, {os.cpu_count()} cores: FINE_TUNE "
      f"{base}, {images} images, {epochs} epochs (a checkpoint each), "
      f"{sum(1 for r in rows if r[0] == 'idle')} job(s) per server, no Predict traffic")
print(f"{'server':<34}{'job s (median)':>16}{'loads':>8}")
print(f"{'--reload_idle_after_s=0':<34}{med['always']:>16.2f}{loads('always'):>8}")
print(f"{'--reload_idle_after_s=300':<34}{med['idle']:>16.2f}{loads('idle'):>8}")
print(f"job time, always / idle: {med['always'] / med['idle']:.3f}x")
print(f"first request after the job: version {served} (the job's last: {last})")
if served != last:
    sys.exit(f"reload_bench: served version {served}, the job's last is {last}")
PYEOF
