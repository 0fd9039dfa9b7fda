#!/usr/bin/env bash
# Serving benchmark, one command: Kaizen's Predict with dynamic batching on,
# Kaizen with batching off (disable_batching on every request), and a
# one-request-at-a-time Python server (tools/predict_server_py.py) on the same
# TorchScript checkpoint, all driven by the same `kaizenctl bench predict`.
#
# It builds kaizen-server and kaizenctl (or uses $KAIZEN_BIN_DIR), starts
# kaizen-server on a temporary data dir and a free loopback port, uploads a
# balanced Fashion-MNIST subset (IDX), fine-tunes a real model on it (default
# resnet-small, SCRATCH, 1 epoch on 2,000 images), downloads the checkpoint
# and starts the Python server on it. A smoke check then classifies the same
# test images on both servers and compares the top-1 classes. Then, for each
# concurrency, R rounds of the three configurations, interleaved (the order
# rotates every round), D measured seconds each after a WARMUP. It prints
# medians over rounds (req/s, p50, p99) and the medians of per-round ratios
# (batching on/off, Kaizen/Python), and appends every run as one JSON line to
# $PREDICT_RESULTS with the date, commit and machine.
#
# Usage: bench/predict/predict_bench.sh
# Settings (environment):
#   R=3                 rounds          D=10           measured seconds a run
#   WARMUP=2            unmeasured seconds before each run
#   CONCURRENCY="1 8 32 128"           INPUT=tensor (random tensors) or image
#   THREADS=$(nproc)    intra-op threads of both servers (kaizen-server --threads,
#                       the Python server's torch.set_num_threads)
#   BASE_ARCH=resnet-small  TRAIN_IMAGES=2000  EPOCHS=1  STRATEGY=scratch
#   KAIZEN_SERVER_FLAGS="..."   extra kaizen-server flags (e.g. --max_batch_size=64)
#   PREDICT_RESULTS=bench/runs/history/predict_results.jsonl
#   KAIZEN_BIN_DIR=DIR  prebuilt kaizen-server and kaizenctl; otherwise
#                       scripts/build.sh builds them in ${KAIZEN_BUILD_DIR:-build}
# Plot: /usr/bin/python3 bench/predict/predict_plot.py bench/runs/history/predict_results.jsonl
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/common.sh
R="${R:-3}"
D="${D:-10}"
WARMUP="${WARMUP:-2}"
CONCURRENCY="${CONCURRENCY:-1 8 32 128}"
INPUT="${INPUT:-tensor}"
THREADS="${THREADS:-$(nproc)}"
BASE_ARCH="${BASE_ARCH:-resnet-small}"
TRAIN_IMAGES="${TRAIN_IMAGES:-2000}"
EPOCHS="${EPOCHS:-1}"
STRATEGY="${STRATEGY:-scratch}"
KAIZEN_SERVER_FLAGS="${KAIZEN_SERVER_FLAGS:-}"
RESULTS="${PREDICT_RESULTS:-bench/runs/history/predict_results.jsonl}"
PY=/usr/bin/python3
MODEL=serve-bench
# libgomp spins by default, which on a shared 2-core machine makes a second
# thread slower than none (bench/README.md, "Threads"); both servers alike.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

bench_binaries predict_bench

WORK=$(mktemp -d "${TMPDIR:-/tmp}/predict-bench.XXXXXX")
SERVER_PID=""
PY_PID=""
cleanup() {
  local rc=$?
  for pid in $PY_PID $SERVER_PID; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in $PY_PID $SERVER_PID; do
    wait "$pid" 2>/dev/null || true
  done
  if [ $rc -ne 0 ]; then
    for log in "$WORK/server.log" "$WORK/python.log"; do
      [ -f "$log" ] && { echo "--- last lines of $(basename "$log") ---" >&2; tail -n 20 "$log" >&2; }
    done
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
PY_PORT=$(free_port)
# shellcheck disable=SC2086
"$BUILD/kaizen-server" --data_dir="$WORK/data" --host=127.0.0.1 --grpc_port="$PORT" \
  --metrics_port=-1 --threads="$THREADS" $KAIZEN_SERVER_FLAGS >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
CTL() { "$BUILD/kaizenctl" --server="127.0.0.1:$PORT" "$@"; }
PYCTL() { "$BUILD/kaizenctl" --server="127.0.0.1:$PY_PORT" "$@"; }
wait_for() {  # DESCRIPTION PID COMMAND...: until COMMAND succeeds, 60 s at most
  local what=$1 pid=$2; shift 2
  for _ in $(seq 1 300); do
    "$@" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || { echo "predict_bench: $what exited" >&2; return 1; }
    sleep 0.2
  done
  echo "predict_bench: $what did not answer within 60 s" >&2
  return 1
}
wait_for kaizen-server "$SERVER_PID" CTL --timeout=5s datasets list

# A balanced subset of the training images, and a few test images as PNGs.
$PY - "$WORK" "$TRAIN_IMAGES" <<'PYEOF'
import os
import sys
sys.path.insert(0, "tools")
from make_fashion_subsets import load, write
src = "/usr/share/datasets/fashion-mnist"
from PIL import Image
out, n = sys.argv[1], int(sys.argv[2])
images, labels = load(src, "train")
kept = write(out, "train", images, labels, list(range(10)), n // 10)
test, test_labels = load(src, "t10k")
os.makedirs(f"{out}/test")
for i in range(16):
    Image.frombytes("L", (28, 28), test[i*784:(i+1)*784]).save(f"{out}/test/{i:02d}-label{test_labels[i]}.png")
print(f"subset: {kept} training images", file=sys.stderr)
PYEOF
CLASSES=t-shirt,trouser,pullover,dress,coat,sandal,shirt,sneaker,bag,ankle-boot
CTL datasets upload fm-serve "$WORK/train-images" --format=idx --labels="$WORK/train-labels" \
  --class_names=$CLASSES >/dev/null

echo "fine-tuning $BASE_ARCH ($STRATEGY, $EPOCHS epoch(s), $TRAIN_IMAGES images)..." >&2
t0=$(date +%s)
if ! CTL finetune start --base="$BASE_ARCH" --dataset=fm-serve --output_model="$MODEL" \
  --strategy="$STRATEGY" --epochs="$EPOCHS" --seed=1 --watch >"$WORK/finetune.log" 2>&1; then
  cat "$WORK/finetune.log" >&2
  exit 1
fi
echo "fine-tuned in $(( $(date +%s) - t0 )) s: $(tail -n 2 "$WORK/finetune.log" | head -n 1)" >&2
CTL models download "$MODEL" "$WORK/model.pt" >/dev/null
MODEL_JSON=$(CTL --output=json models get "$MODEL")

"$PY" tools/predict_server_py.py "$WORK/model.pt" --port="$PY_PORT" --threads="$THREADS" \
  >"$WORK/python.log" 2>&1 &
PY_PID=$!
wait_for "the Python server" "$PY_PID" PYCTL --timeout=5s models get "$MODEL"

# Smoke check: both servers classify the same test images alike.
CTL --output=json predict "$MODEL" "$WORK"/test/*.png >"$WORK/kaizen-predict.json"
PYCTL --output=json predict "$MODEL" "$WORK"/test/*.png >"$WORK/python-predict.json"
$PY - "$WORK/kaizen-predict.json" "$WORK/python-predict.json" <<'PYEOF'
import json, sys
k, p = (json.load(open(f)) for f in sys.argv[1:3])
top = lambda d: [(c["classes"][0].get("index", 0), c["classes"][0]["probability"]) for c in d["predictions"]]
tk, tp = top(k), top(p)
same = sum(a[0] == b[0] for a, b in zip(tk, tp))
diff = max(abs(a[1] - b[1]) for a, b in zip(tk, tp))
print(f"smoke check: same top-1 on {same}/{len(tk)} test images, largest top-1 probability "
      f"difference {diff:.2e} (Kaizen version {k['version']}, Python version {p['version']})",
      file=sys.stderr)
if same != len(tk):
    sys.exit("predict_bench: the servers disagree; the Python baseline is not serving the same model")
PYEOF

IMAGE_ARGS=()
if [ "$INPUT" = image ]; then IMAGE_ARGS=(--image="$WORK/test/00-label9.png")
elif [ "$INPUT" != tensor ]; then echo "predict_bench: INPUT must be tensor or image" >&2; exit 2; fi

RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)-$$
COMMIT=$(bench_commit)
CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
mkdir -p "$(dirname "$RESULTS")"
RUN_LINES="$WORK/run.jsonl"
: >"$RUN_LINES"
# Read by the JSON writer in run_one.
export RUN_ID COMMIT CPU_MODEL MODEL_JSON THREADS INPUT D WARMUP KAIZEN_SERVER_FLAGS

# run_one CONFIG CONCURRENCY ROUND: one bench run, one JSON line.
run_one() {
  local config=$1 c=$2 round=$3 rc=0 out
  local args=(bench predict "$MODEL" --concurrency="$c" --duration="$D" --warmup="$WARMUP"
    "${IMAGE_ARGS[@]}")
  case $config in
    kaizen-on) out=$(CTL --output=json "${args[@]}" --batching=on 2>"$WORK/err") || rc=$? ;;
    kaizen-off) out=$(CTL --output=json "${args[@]}" --batching=off 2>"$WORK/err") || rc=$? ;;
    python) out=$(PYCTL --output=json "${args[@]}" 2>"$WORK/err") || rc=$? ;;
  esac
  [ -n "$out" ] || out=null
  CONFIG=$config CONC=$c ROUND=$round RC=$rc ERR=$(cat "$WORK/err") OUT=$out DATE=$(date -u +%FT%TZ) \
    $PY - <<'PYEOF' >>"$RUN_LINES"
import json, os
e = os.environ
m = json.loads(e["MODEL_JSON"])
print(json.dumps({
    "run_id": e["RUN_ID"], "date": e["DATE"], "commit": e["COMMIT"],
    "nproc": len(os.sched_getaffinity(0)), "cpu_model": e["CPU_MODEL"], "loadavg": round(os.getloadavg()[0], 2),
    "server": e["CONFIG"].split("-")[0],
    "mode": {"kaizen-on": "batching on", "kaizen-off": "batching off",
             "python": "one at a time"}[e["CONFIG"]],
    "config": e["CONFIG"], "concurrency": int(e["CONC"]), "round": int(e["ROUND"]),
    "rc": int(e["RC"]), "error": e["ERR"].strip(), "threads": int(e["THREADS"]),
    "input": e["INPUT"], "duration_seconds": float(e["D"]), "warmup_seconds": float(e["WARMUP"]),
    "kaizen_server_flags": e["KAIZEN_SERVER_FLAGS"], "omp_wait_policy": e["OMP_WAIT_POLICY"],
    "model": {"name": m["name"], "version": int(m["version"]), "architecture": m.get("architecture"),
              "input_shape": [int(x) for x in m.get("inputShape", [])],
              "parameters": int(m.get("parameterCount", 0))},
    "result": json.loads(e["OUT"]),
}))
PYEOF
  tail -n 1 "$RUN_LINES" >>"$RESULTS"
  $PY -c '
import json, sys
d = json.loads(sys.argv[1]); r = d["result"] or {}
lat = r.get("latency_ms", {})
print("  c=%-4d round %d  %-10s %8.1f req/s  p50 %7.2f ms  p99 %7.2f ms  errors %d%s" % (
    d["concurrency"], d["round"], d["config"], r.get("requests_per_second", 0),
    lat.get("p50", 0), lat.get("p99", 0), r.get("failed_requests", 0),
    "" if d["rc"] == 0 else "  (exit %d: %s)" % (d["rc"], d["error"][:200])))' "$(tail -n 1 "$RUN_LINES")" >&2
}

CONFIGS=(kaizen-on kaizen-off python)
echo "benchmark: concurrency $CONCURRENCY, $R rounds of ${D}s (+${WARMUP}s warm-up), input $INPUT, $THREADS threads" >&2
for c in $CONCURRENCY; do
  for round in $(seq 1 "$R"); do
    for i in 0 1 2; do
      run_one "${CONFIGS[$(( (i + round - 1) % 3 ))]}" "$c" "$round"
    done
  done
done

$PY - "$RUN_LINES" <<'PYEOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
first = rows[0]
m = first["model"]
print(f"\nServing benchmark {first['run_id']}: {m['name']} v{m['version']} ({m['architecture']}, "
      f"{m['parameters']:,} parameters, input {'x'.join(map(str, m['input_shape']))}), "
      f"input {first['input']}")
print(f"machine: {first['nproc']} x {first['cpu_model']}; commit {first['commit']}; "
      f"{first['threads']} threads; OMP_WAIT_POLICY={first['omp_wait_policy']}; "
      f"{first['duration_seconds']} s per run after {first['warmup_seconds']} s warm-up")
med = lambda xs: statistics.median(xs) if xs else float("nan")
def get(config, c, key):
    out = {}
    for r in rows:
        if r["config"] == config and r["concurrency"] == c and r["result"]:
            res = r["result"]
            out[r["round"]] = res["requests_per_second"] if key == "rps" else res["latency_ms"][key]
    return out
configs = ["kaizen-on", "kaizen-off", "python"]
names = {"kaizen-on": "kaizen  batching on", "kaizen-off": "kaizen  batching off",
         "python": "python  one at a time"}
conc = sorted({r["concurrency"] for r in rows})
print(f"\nmedians over {max(r['round'] for r in rows)} round(s)\n")
print(f"{'server / mode':<24}{'conc':>6}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
for c in conc:
    for cfg in configs:
        errs = sum((r["result"] or {}).get("failed_requests", 0)
                   for r in rows if r["config"] == cfg and r["concurrency"] == c)
        print(f"{names[cfg]:<24}{c:>6}{med(list(get(cfg, c, 'rps').values())):>10.1f}"
              f"{med(list(get(cfg, c, 'p50').values())):>10.2f}"
              f"{med(list(get(cfg, c, 'p99').values())):>10.2f}{errs:>8}")
def ratio(a, b, c, key="rps"):
    x, y = get(a, c, key), get(b, c, key)
    return med([x[k] / y[k] for k in x if k in y and y[k] > 0])
print("\nmedian of per-round ratios (req/s; p99 for the last column)\n")
print(f"{'conc':>6}{'on/off':>10}{'on/python':>12}{'off/python':>12}{'p99 on/off':>12}")
for c in conc:
    print(f"{c:>6}{ratio('kaizen-on', 'kaizen-off', c):>10.2f}{ratio('kaizen-on', 'python', c):>12.2f}"
          f"{ratio('kaizen-off', 'python', c):>12.2f}{ratio('kaizen-on', 'kaizen-off', c, 'p99'):>12.2f}")
failed = [r for r in rows if r["rc"] != 0]
if failed:
    print(f"\n{len(failed)} run(s) had failed requests or did not finish; see 'error' in the results")
PYEOF
echo "raw results appended to $RESULTS (run_id $RUN_ID); plot: $PY bench/predict/predict_plot.py $RESULTS" >&2
