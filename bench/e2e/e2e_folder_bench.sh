#!/usr/bin/env bash
# End-to-end fine-tuning on an image folder, one command: the wall time a user
# waits with Kaizen (`kaizenctl datasets upload NAME FOLDER`, then
# `kaizenctl finetune start ... --watch` until the job ends) against the
# textbook PyTorch pipeline (bench/e2e/e2e_folder_pytorch.py: ImageFolder +
# transforms + DataLoader + the same optimisation loop, model saved at the
# end), on the same folder, the same initial TorchScript model and the same
# number of epochs.
#
# It writes PER_CLASS PNGs per class from Fashion-MNIST's test images into
# class sub-folders (tools/make_image_folder.py), starts kaizen-server on a
# temporary data dir and a free loopback port, downloads the built-in BASE_ARCH
# as a TorchScript file (base.pt: 1x28x28, 10 classes, mean/std in its
# kaizen.json) and uploads it back as the model `e2e-base`, so both sides start
# from the same file. (Unmeasured setup.) Then R rounds, interleaved (the order
# rotates every round; round 1 runs Kaizen first): one Kaizen job (FULL,
# augmentation off, seed 1, Kaizen's defaults otherwise) and one PyTorch run
# per DataLoader worker count in WORKERS, with the hyperparameters Kaizen
# resolved for its job (`kaizenctl --output=json jobs get ID`). It prints
# medians over rounds of the total wall seconds and of the seconds per epoch
# after the first, the medians of per-round ratios PyTorch/Kaizen, and the
# final training/validation loss and accuracy of both, and appends one JSON
# line per run to $E2E_RESULTS with the date, commit and machine.
#
# Usage: bench/e2e/e2e_folder_bench.sh
# Settings (environment):
#   R=3                 rounds               PER_CLASS=300  images per class (<= 1000)
#   EPOCHS=3            epochs of every run (>= 2: the per-epoch figure skips the first)
#   BATCH=32            batch size of both sides
#   THREADS=$(nproc)    kaizen-server --threads and the PyTorch side's torch.set_num_threads
#   WORKERS="2"         DataLoader num_workers of the PyTorch runs; "0 2" runs both
#   BASE_ARCH=resnet-small   built-in model both sides start from
#   KAIZEN_SERVER_FLAGS="..."   extra kaizen-server flags
#   E2E_RESULTS=bench/runs/history/e2e_results.jsonl
#   KAIZEN_BIN_DIR=DIR  prebuilt kaizen-server and kaizenctl; otherwise
#                       scripts/build.sh builds them in ${KAIZEN_BUILD_DIR:-build}
# Quick check: R=1 PER_CLASS=20 EPOCHS=2 KAIZEN_BIN_DIR=build E2E_RESULTS=/tmp/e2e.jsonl bench/e2e/e2e_folder_bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/common.sh
R="${R:-3}"
PER_CLASS="${PER_CLASS:-300}"
EPOCHS="${EPOCHS:-3}"
BATCH="${BATCH:-32}"
THREADS="${THREADS:-$(nproc)}"
WORKERS="${WORKERS:-2}"
BASE_ARCH="${BASE_ARCH:-resnet-small}"
KAIZEN_SERVER_FLAGS="${KAIZEN_SERVER_FLAGS:-}"
RESULTS="${E2E_RESULTS:-bench/runs/history/e2e_results.jsonl}"
FASHION_DIR="${FASHION_DIR:-/usr/share/datasets/fashion-mnist}"
PY=/usr/bin/python3
BASE_MODEL=e2e-base
# libgomp spins by default, which on a shared 2-core machine makes a second
# thread slower than none (bench/README.md, "Threads"); both sides alike.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
if [ "$EPOCHS" -lt 2 ]; then echo "e2e_folder_bench: EPOCHS must be >= 2" >&2; exit 2; fi

bench_binaries e2e_folder_bench

WORK=$(mktemp -d "${TMPDIR:-/tmp}/e2e-folder-bench.XXXXXX")
SERVER_PID=""
cleanup() {
  local rc=$?
  if [ -n "$SERVER_PID" ]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [ $rc -ne 0 ] && [ -f "$WORK/server.log" ]; then
    echo "--- last lines of server.log ---" >&2; tail -n 20 "$WORK/server.log" >&2
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }

# The folder: PER_CLASS PNGs in each of 10 class sub-folders.
$PY tools/make_image_folder.py "$FASHION_DIR" "$WORK/folder" "$PER_CLASS" >&2
IMAGES=$(find "$WORK/folder" -name '*.png' | wc -l)

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
# shellcheck disable=SC2086
"$BUILD/kaizen-server" --data_dir="$WORK/data" --host=127.0.0.1 --grpc_port="$PORT" \
  --metrics_port=-1 --threads="$THREADS" $KAIZEN_SERVER_FLAGS >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
CTL() { "$BUILD/kaizenctl" --server="127.0.0.1:$PORT" "$@"; }
ready=0
for _ in $(seq 1 300); do
  if CTL --timeout=5s datasets list >/dev/null 2>&1; then ready=1; break; fi
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "e2e_folder_bench: kaizen-server exited" >&2; exit 1; }
  sleep 0.2
done
[ $ready = 1 ] || { echo "e2e_folder_bench: kaizen-server did not answer within 60 s" >&2; exit 1; }

# The same initial model for both sides: the built-in's TorchScript file.
CTL models download "$BASE_ARCH" "$WORK/base.pt" >/dev/null
CTL models upload "$BASE_MODEL" "$WORK/base.pt" >/dev/null
MODEL_JSON=$(CTL --output=json models get "$BASE_MODEL")

RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)-$$
COMMIT=$(bench_commit)
CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
TORCH_VERSION=$($PY -c 'import torch, torchvision; print(torch.__version__, "/ torchvision", torchvision.__version__)')
LIBTORCH=$(ldd "$BUILD/kaizen-server" 2>/dev/null | sed -n 's/.*\(libtorch[^ ]*\) => \([^ ]*\).*/\2/p' | head -n 1)
BLAS=$(readlink -f "$(ldconfig -p 2>/dev/null | sed -n 's/.*libblas.so.3 .*=> //p' | head -n 1)" 2>/dev/null || true)
mkdir -p "$(dirname "$RESULTS")"
RUN_LINES="$WORK/run.jsonl"
: >"$RUN_LINES"
export RUN_ID COMMIT CPU_MODEL MODEL_JSON THREADS EPOCHS BATCH PER_CLASS IMAGES BASE_ARCH \
  KAIZEN_SERVER_FLAGS TORCH_VERSION LIBTORCH BLAS

echo "e2e folder benchmark $RUN_ID: $IMAGES images ($PER_CLASS per class), $BASE_ARCH, FULL," \
  "$EPOCHS epochs, batch $BATCH, $R round(s), PyTorch DataLoader workers: $WORKERS" >&2
echo "machine: $(nproc) x $CPU_MODEL; commit $COMMIT; torch $TORCH_VERSION; libtorch ${LIBTORCH:-?};" \
  "BLAS ${BLAS:-?}; $THREADS threads; OMP_WAIT_POLICY=$OMP_WAIT_POLICY; load $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# record RUNNER ROUND RC T0 T1 T2: one JSON line from the run's files.
record() {
  RUNNER=$1 ROUND=$2 RC=$3 T0=$4 T1=$5 T2=$6 WORK=$WORK DATE=$(date -u +%FT%TZ) \
    $PY - <<'PYEOF' >>"$RUN_LINES"
import json, os
e = os.environ
w, runner = e["WORK"], e["RUNNER"]
t0, t1, t2 = float(e["T0"]), float(e["T1"]), float(e["T2"])
m = json.loads(e["MODEL_JSON"])
res, err, hp = {"total_seconds": t2 - t0}, "", None
def rows(path):
    out = []
    if os.path.exists(path):
        for line in open(path):
            try: out.append(json.loads(line))
            except ValueError: pass
    return out
if runner == "kaizen":
    res["upload_seconds"] = t1 - t0
    res["finetune_seconds"] = t2 - t1
    events = []  # (arrival time, JobEvent) from the timestamped --watch output
    for line in open(f"{w}/kaizen-watch.txt"):
        stamp, _, text = line.partition(" ")
        try: events.append((float(stamp), json.loads(text)))
        except ValueError: pass
    epochs = [(t, ev["epochSummary"]) for t, ev in events if "epochSummary" in ev]
    if os.path.exists(f"{w}/job.json"):
        job = json.load(open(f"{w}/job.json"))
        hp = job.get("resolvedHyperparameters")
        res["state"] = job.get("state")
        err = job.get("error", "")
    # An epoch without validation reports 0/0 (kaizenctl's EpochIsValidated).
    val = lambda s, k: s.get(k) if (s.get("valLoss") or s.get("valAccuracy")) else None
    res["epochs"] = [{"epoch": s.get("epoch"), "t": t - t0, "seconds": s.get("seconds"),
                      "train_loss": s.get("trainLoss"), "train_accuracy": s.get("trainAccuracy"),
                      "val_loss": val(s, "valLoss"), "val_accuracy": val(s, "valAccuracy")}
                     for t, s in epochs]
else:
    if os.path.exists(f"{w}/hp.json"):
        hp = json.load(open(f"{w}/hp.json")).get("resolvedHyperparameters")
    out = rows(f"{w}/pt.jsonl")
    setup = next((r for r in out if r.get("event") == "setup"), {})
    for k in ("import_seconds", "dataset_seconds", "train_images", "val_images", "workers",
              "steps_per_epoch", "lrs", "warmup_epochs"):
        if k in setup: res[k] = setup[k]
    # The script's clock starts at its first line; place it on ours by its end.
    done = next((r for r in out if r.get("event") == "done"), None)
    offset = (t2 - t0) - done["t"] if done else 0.0
    res["epochs"] = [{"epoch": r["epoch"], "t": r["t"] + offset, "seconds": r["seconds"],
                      "train_loss": r["train_loss"], "train_accuracy": r["train_accuracy"],
                      "val_loss": r.get("val_loss"), "val_accuracy": r.get("val_accuracy")}
                     for r in out if r.get("event") == "epoch"]
    if os.path.exists(f"{w}/pt.err"):
        err = open(f"{w}/pt.err").read().strip()[-2000:]
ep = res["epochs"]
if len(ep) >= 2:
    res["first_epoch_end_seconds"] = ep[0]["t"]
    res["seconds_per_epoch_after_first"] = (ep[-1]["t"] - ep[0]["t"]) / (len(ep) - 1)
if ep:
    for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        res["final_" + k] = ep[-1][k]
load = os.getloadavg()
print(json.dumps({
    "run_id": e["RUN_ID"], "date": e["DATE"], "commit": e["COMMIT"],
    "nproc": len(os.sched_getaffinity(0)), "cpu_model": e["CPU_MODEL"],
    "loadavg": [round(x, 2) for x in load],
    "runner": runner, "round": int(e["ROUND"]), "rc": int(e["RC"]), "error": err,
    "images": int(e["IMAGES"]), "per_class": int(e["PER_CLASS"]), "epochs": int(e["EPOCHS"]),
    "batch_size": int(e["BATCH"]), "threads": int(e["THREADS"]),
    "omp_wait_policy": e["OMP_WAIT_POLICY"], "kaizen_server_flags": e["KAIZEN_SERVER_FLAGS"],
    "torch": e["TORCH_VERSION"], "libtorch": e["LIBTORCH"], "blas": e["BLAS"],
    "model": {"name": m["name"], "base": e["BASE_ARCH"],
              "input_shape": [int(x) for x in m.get("inputShape", [])],
              "parameters": int(m.get("parameterCount", 0))},
    "hyperparameters": hp,
    "result": res,
}))
PYEOF
  tail -n 1 "$RUN_LINES" >>"$RESULTS"
  $PY -c '
import json, sys
d = json.loads(sys.argv[1]); r = d["result"]
f = lambda k, fmt="%.2f": (fmt % r[k]) if r.get(k) is not None else "-"
print("  round %d  %-12s total %7s s  epoch>1 %6s s  train loss %s acc %s  val loss %s acc %s%s" % (
    d["round"], d["runner"], f("total_seconds", "%.1f"), f("seconds_per_epoch_after_first"),
    f("final_train_loss", "%.3f"), f("final_train_accuracy", "%.3f"),
    f("final_val_loss", "%.3f"), f("final_val_accuracy", "%.3f"),
    "" if d["rc"] == 0 else "  (exit %d: %s)" % (d["rc"], d["error"][-300:])))' \
    "$(tail -n 1 "$RUN_LINES")" >&2
}

# One Kaizen run, timed as a user would: upload the folder, fine-tune, watch to the end.
run_kaizen() {
  local round=$1 rc=0 t0 t1 t2 ds="e2e-r$1" out="e2e-out-r$1" id
  rm -f "$WORK/kaizen-watch.txt" "$WORK/job.json"
  t0=$(now)
  CTL datasets upload "$ds" "$WORK/folder" >"$WORK/upload.log" 2>&1 || rc=$?
  t1=$(now)
  if [ $rc -eq 0 ]; then
    # Each line of the JSON Lines stream gets its arrival time (epoch seconds).
    CTL --output=json finetune start --base="$BASE_MODEL" --dataset="$ds" --output_model="$out" \
      --strategy=full --epochs="$EPOCHS" --batch_size="$BATCH" --seed=1 --augment=off --watch \
      2>"$WORK/watch.err" |
      $PY -u -c 'import sys, time
for line in sys.stdin: sys.stdout.write("%.6f %s" % (time.time(), line)); sys.stdout.flush()' \
      >"$WORK/kaizen-watch.txt" || rc=$?
  fi
  t2=$(now)
  id=$($PY -c 'import json, sys
for line in open(sys.argv[1]):
    d = json.loads(line.partition(" ")[2])
    if d.get("id"): print(d["id"]); break
    if d.get("jobId"): print(d["jobId"]); break' "$WORK/kaizen-watch.txt" 2>/dev/null || true)
  if [ -n "$id" ]; then
    CTL --output=json jobs get "$id" >"$WORK/job.json" 2>/dev/null || true
    # Round 1 runs Kaizen first: its resolved hyperparameters drive the PyTorch runs.
    if [ ! -f "$WORK/hp.json" ] && [ $rc -eq 0 ]; then cp "$WORK/job.json" "$WORK/hp.json"; fi
  fi
  [ $rc -eq 0 ] || { cat "$WORK/upload.log" "$WORK/watch.err" >&2 2>/dev/null || true; }
  record kaizen "$round" "$rc" "$t0" "$t1" "$t2"
  CTL models delete "$out" >/dev/null 2>&1 || true
  CTL datasets delete "$ds" >/dev/null 2>&1 || true
}

# One PyTorch run: the whole process, imports and dataset build included.
run_pytorch() {
  local workers=$1 round=$2 rc=0 t0 t2
  [ -f "$WORK/hp.json" ] || { echo "e2e_folder_bench: no resolved hyperparameters (the first Kaizen run failed)" >&2; exit 1; }
  t0=$(now)
  "$PY" bench/e2e/e2e_folder_pytorch.py --model="$WORK/base.pt" --folder="$WORK/folder" \
    --config="$WORK/hp.json" --workers="$workers" --threads="$THREADS" --save="$WORK/pytorch.pt" \
    >"$WORK/pt.jsonl" 2>"$WORK/pt.err" || rc=$?
  t2=$(now)
  record "pytorch-w$workers" "$round" "$rc" "$t0" "$t0" "$t2"
  rm -f "$WORK/pytorch.pt"
}

RUNNERS=(kaizen)
for w in $WORKERS; do RUNNERS+=("pytorch-w$w"); done
N=${#RUNNERS[@]}
for round in $(seq 1 "$R"); do
  for i in $(seq 0 $((N - 1))); do
    runner=${RUNNERS[$(( (i + round - 1) % N ))]}
    if [ "$runner" = kaizen ]; then run_kaizen "$round"; else run_pytorch "${runner#pytorch-w}" "$round"; fi
  done
done

$PY - "$RUN_LINES" "$WORK/hp.json" <<'PYEOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
first = rows[0]
med = lambda xs: statistics.median(xs) if xs else float("nan")
runners = list(dict.fromkeys(r["runner"] for r in rows))
def get(runner, key):
    return {r["round"]: r["result"][key] for r in rows
            if r["runner"] == runner and r["rc"] == 0 and r["result"].get(key) is not None}
m = first["model"]
print(f"\nE2E image-folder fine-tuning {first['run_id']}: {first['images']} PNGs "
      f"({first['per_class']} per class), {m['name']} (from built-in {m['base']}, "
      f"{m['parameters']:,} parameters, input {'x'.join(map(str, m['input_shape']))}), FULL, "
      f"{first['epochs']} epochs, batch {first['batch_size']}")
print(f"machine: {first['nproc']} x {first['cpu_model']}; commit {first['commit']}; "
      f"torch {first['torch']}; {first['threads']} threads; OMP_WAIT_POLICY={first['omp_wait_policy']}; "
      f"load at the end {' '.join(map(str, first['loadavg']))} .. {' '.join(map(str, rows[-1]['loadavg']))}")
try:
    hp = json.load(open(sys.argv[2]))["resolvedHyperparameters"]
    o, s = hp.get("optimizer", {}), hp.get("schedule", {})
    print(f"hyperparameters (Kaizen's, both sides): {o.get('kind')} lr {hp.get('learningRate')} "
          f"(backbone x{hp.get('backboneLrMultiplier')}) wd {o.get('weightDecay')}, {s.get('kind')} "
          f"warm-up {s.get('warmupEpochs', 0)} ep min ratio {s.get('minLrRatio')}, label smoothing "
          f"{hp.get('labelSmoothing')}, validation split {hp.get('validation', {}).get('split', 0)}, "
          f"drop_last_fraction {hp.get('dropLastFraction')}, augmentation off")
except (OSError, ValueError, KeyError):
    pass
print(f"\nmedians over {max(r['round'] for r in rows)} round(s)\n")
hdr = ("runner", "total s", "epoch>1 s", "1st epoch end s", "train loss", "train acc", "val loss",
       "val acc")
print(f"{hdr[0]:<14}{hdr[1]:>10}{hdr[2]:>11}{hdr[3]:>17}{hdr[4]:>12}{hdr[5]:>11}{hdr[6]:>10}"
      f"{hdr[7]:>9}")
for name in runners:
    v = lambda k: med(list(get(name, k).values()))
    print(f"{name:<14}{v('total_seconds'):>10.1f}{v('seconds_per_epoch_after_first'):>11.2f}"
          f"{v('first_epoch_end_seconds'):>17.1f}{v('final_train_loss'):>12.3f}"
          f"{v('final_train_accuracy'):>11.3f}{v('final_val_loss'):>10.3f}"
          f"{v('final_val_accuracy'):>9.3f}")
k_up = med(list(get("kaizen", "upload_seconds").values()))
print(f"\nKaizen upload (archive + send + decode on the server): median {k_up:.2f} s of the total")
def ratio(a, b, key):
    x, y = get(a, key), get(b, key)
    return med([x[k] / y[k] for k in x if k in y and y[k] > 0])
print("\nmedian of per-round ratios PyTorch / Kaizen (> 1: Kaizen is faster)\n")
print(f"{'runner':<14}{'total':>8}{'epoch>1':>10}")
for name in runners:
    if name != "kaizen":
        print(f"{name:<14}{ratio(name, 'kaizen', 'total_seconds'):>8.2f}"
              f"{ratio(name, 'kaizen', 'seconds_per_epoch_after_first'):>10.2f}")
failed = [r for r in rows if r["rc"] != 0]
if failed:
    print(f"\n{len(failed)} run(s) failed; see 'error' in the results")
PYEOF
echo "raw results appended to $RESULTS (run_id $RUN_ID)" >&2
