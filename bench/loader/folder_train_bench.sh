#!/usr/bin/env bash
# Training throughput and memory on a JPEG folder at 224x224 (issue 17): a
# Kaizen job reading the stored record file -- streamed through the
# RecordLoader (--max_job_image_memory_mb=0) and converted into memory (the
# default budget) -- against PyTorch's ImageFolder + DataLoader with 0 and 2
# workers (bench/loader/folder_train_pytorch.py), side by side, one epoch
# each, torchvision resnet18 TorchScript (tests/fixtures/export_resnet18.py,
# random weights), batch 32, Adam lr 1e-3, no augmentation (Kaizen holds
# out its default validation split, evaluated after the epoch, outside the
# images/s but inside the peak RSS):
#   FINE_TUNE            layer4 and a new head train (trainable_blocks=1)
#   FEATURE_EXTRACTION   only the head trains (Kaizen caches the backbone's
#                        features in the epoch; PyTorch runs it every step)
# The folder is tools/make_jpeg_folder.py's (Fashion-MNIST upscaled to
# 224x224 RGB, tinted, with grain, quality 98). Kaizen's images/s is the
# epoch's samples_per_second (training steps, and for FEATURE_EXTRACTION the
# feature pass, not the checkpoint); its memory is the server's peak RSS
# (VmHWM) during the job above its RSS before it, in a server started afresh
# for each run. PyTorch's is the epoch's images / seconds and the peak RSS of
# the process and of its largest worker (ru_maxrss), and the PSS (shared pages
# counted once) of the process and its workers together that the epoch added
# to the process's before it (sampled every 50 ms), the figure to set beside
# the Kaizen job's growth.
# A second streamed FINE_TUNE on a tenth of the folder shows whether the
# job's memory grows with its dataset. Last, the input pipelines alone (no
# model): bench/kaizen_loader_bench on the stored record file, 2 threads,
# against the DataLoader with 0 and 2 workers (images/s, peak RSS of the
# whole process, workers included; and what each pipeline added to its
# process's PSS: PSS at its peak less PSS just before it started, with
# LibTorch, or torch and torchvision, already loaded on either side).
#
# Usage: [N=2000] [THREADS=$(nproc)] [STRATEGIES="fine_tune feature_extraction"]
#        [KAIZEN_BIN_DIR=build] bench/loader/folder_train_bench.sh
# Smoke (CTest): N=60 STRATEGIES=fine_tune KAIZEN_BIN_DIR=build bench/loader/folder_train_bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/common.sh
N=${N:-2000}
THREADS=${THREADS:-$(nproc)}
PY=/usr/bin/python3
FASHION=/usr/share/datasets/fashion-mnist
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
bench_binaries folder_train_bench
[[ -x $BUILD/bench/kaizen_loader_bench ]] || { echo "folder_train_bench: $BUILD/bench/kaizen_loader_bench is missing" >&2; exit 1; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/folder-train-bench.XXXXXX")
SERVER_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  SERVER_PID=""
}
trap 'stop_server; rm -rf "$WORK"' EXIT
MODEL="${KAIZEN_FIXTURE_DIR:-${KAIZEN_BUILD_DIR:-build}/tests/fixtures}/resnet18.pt"
if [ ! -f "$MODEL" ]; then
  MODEL=$WORK/resnet18.pt
  $PY tests/fixtures/export_resnet18.py "$MODEL"
fi
PORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
CTL() { "$BUILD/kaizenctl" --server="127.0.0.1:$PORT" "$@"; }
# start_server FLAGS...: a kaizen-server on the bench's data directory.
start_server() {
  "$BUILD/kaizen-server" --data_dir="$WORK/data" --host=127.0.0.1 --grpc_port="$PORT" \
    --metrics_port=-1 --threads="$THREADS" --preload_models=false "$@" >>"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  local _
  for _ in $(seq 1 150); do CTL datasets list >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "folder_train_bench: kaizen-server did not start" >&2; tail -5 "$WORK/server.log" >&2; exit 1
}
rss_kb() { sed -n "s/^$1:[[:space:]]*\([0-9]*\) kB/\1/p" "/proc/$SERVER_PID/status"; }

$PY tools/make_jpeg_folder.py "$FASHION" "$WORK/folder" "$N" >&2
SMALL=$(( N / 10 > 20 ? N / 10 : 20 ))
$PY tools/make_jpeg_folder.py "$FASHION" "$WORK/small" "$SMALL" >&2
start_server
CTL datasets upload big "$WORK/folder" >/dev/null
CTL datasets upload small "$WORK/small" >/dev/null
CTL models upload r18 "$MODEL" >/dev/null
stop_server

# kaizen_run LABEL DATASET STRATEGY SERVER-FLAGS...: one job in a fresh server.
kaizen_run() {
  local label=$1 dataset=$2 strategy=$3; shift 3
  start_server "$@"
  local before id
  before=$(rss_kb VmRSS)
  CTL --output=json finetune start --base=r18 --dataset="$dataset" --output_model="out-$label" \
    --strategy="$strategy" --epochs=1 --batch_size=32 --trainable_blocks=1 --lr=0.001 \
    --backbone_lr_multiplier=1 --optimizer=adam --schedule=constant --augment=off \
    --seed=1 --watch >"$WORK/watch.jsonl" 2>"$WORK/watch.err" ||
    { cat "$WORK/watch.err" >&2; exit 1; }
  id=$($PY -c 'import json, sys
for line in open(sys.argv[1]):
    d = json.loads(line)
    i = d.get("id") or d.get("jobId")
    if i: print(i); break' "$WORK/watch.jsonl")
  CTL --output=json jobs get "$id" >"$WORK/job.json"
  $PY - "$WORK/job.json" "$label" "$strategy" "$before" "$(rss_kb VmHWM)" <<'PYEOF' >>"$WORK/runs.jsonl"
import json, sys
job = json.load(open(sys.argv[1]))
assert job["state"] == "JOB_STATE_SUCCEEDED", job.get("error")
h = job["history"][-1]
print(json.dumps({"what": "kaizen", "label": sys.argv[2], "strategy": sys.argv[3],
                  "images_per_s": h["samplesPerSecond"],
                  "rss_growth_mb": (int(sys.argv[5]) - int(sys.argv[4])) / 1024}))
PYEOF
  stop_server
}

STRATEGIES=${STRATEGIES:-fine_tune feature_extraction}
for strategy in $STRATEGIES; do
  kaizen_run "streamed-$strategy" big "$strategy" --max_job_image_memory_mb=0 --loader_threads=2
  kaizen_run "memory-$strategy" big "$strategy"
  for w in 0 2; do
    $PY bench/loader/folder_train_pytorch.py --model="$MODEL" --folder="$WORK/folder" \
      --strategy="$strategy" --workers="$w" --threads="$THREADS" >>"$WORK/runs.jsonl"
  done
done
SMALL_STRATEGY=$(echo "$STRATEGIES" | cut -d' ' -f1)
kaizen_run "streamed-small-$SMALL_STRATEGY" small "$SMALL_STRATEGY" --max_job_image_memory_mb=0 --loader_threads=2
# The input pipelines alone, no model: Kaizen's RecordLoader on the stored
# record file (2 threads) against the DataLoader (0 and 2 workers).
"$BUILD/bench/kaizen_loader_bench" --existing_record_file="$(ls "$WORK"/data/datasets/big-*.krf)" \
  --size=224 --epochs=1 --threads=2 --batch_size=32 | grep '"what":"kaizen"' >>"$WORK/runs.jsonl"
for w in 0 2; do
  $PY bench/loader/folder_train_pytorch.py --model="$MODEL" --folder="$WORK/folder" \
    --strategy=loader_only --workers="$w" --threads="$THREADS" >>"$WORK/runs.jsonl"
done

N=$N SMALL=$SMALL THREADS=$THREADS STRATEGIES=$STRATEGIES COMMIT=$(bench_commit) $PY - "$WORK/runs.jsonl" <<'PYEOF'
import json, os, sys
e = os.environ
runs = [json.loads(l) for l in open(sys.argv[1])]
print(f"\nFolder training benchmark, commit {e['COMMIT']}, {os.cpu_count()} cores, "
      f"{e['THREADS']} compute threads, {int(e['N']):,} JPEGs at 224x224, resnet18, batch 32, 1 epoch")
for strategy in e["STRATEGIES"].split():
    rows = [r for r in runs if r.get("strategy") == strategy]
    k = {r["label"]: r for r in rows if r["what"] == "kaizen"}
    p = {r["workers"]: r for r in rows if r["what"] == "pytorch"}
    streamed = k[f"streamed-{strategy}"]
    print(f"\n{strategy.upper()}")
    print(f"{'pipeline':<34} {'img/s':>7} {'peak RSS MB':>12} {'added MB':>9} "
          f"{'img/s ratio':>12} {'RSS ratio':>10} {'added ratio':>12}")
    def line(name, ips, rss, added):
        print(f"{name:<34} {ips:>7.1f} {rss:>12.0f} {added:>9.0f} "
              f"{ips / streamed['images_per_s']:>12.2f} "
              f"{rss / max(streamed['rss_growth_mb'], 1):>10.2f} "
              f"{added / max(streamed['rss_growth_mb'], 1):>12.2f}")
    line("Kaizen streamed (job's growth)", streamed["images_per_s"], streamed["rss_growth_mb"],
         streamed["rss_growth_mb"])
    m = k[f"memory-{strategy}"]
    line("Kaizen in memory (job's growth)", m["images_per_s"], m["rss_growth_mb"],
         m["rss_growth_mb"])
    for w in sorted(p):
        line(f"PyTorch DataLoader, {w} workers", p[w]["images_per_s"], p[w]["total_rss_mb"],
             p[w]["pss_growth_mb"])
print("\nINPUT PIPELINE ALONE (decode + resize to 224x224, batches of 32, no model)")
print(f"{'pipeline':<34} {'img/s':>7} {'peak RSS MB':>12} {'PSS before':>11} {'PSS peak':>9} "
      f"{'added MB':>9} {'img/s ratio':>12} {'RSS ratio':>10} {'added ratio':>12}")
kl = next(r for r in runs if r["what"] == "kaizen" and "threads" in r)
def pipeline(name, r, rss):
    print(f"{name:<34} {r['images_per_s']:>7.1f} {rss:>12.0f} {r['pss_baseline_mb']:>11.0f} "
          f"{r['pss_peak_mb']:>9.0f} {r['pss_growth_mb']:>9.1f} "
          f"{r['images_per_s'] / kl['images_per_s']:>12.2f} {rss / kl['peak_rss_mb']:>10.2f} "
          f"{r['pss_growth_mb'] / max(kl['pss_growth_mb'], 0.1):>12.2f}")
pipeline("Kaizen RecordLoader, 2 threads", kl, kl["peak_rss_mb"])
for r in sorted((r for r in runs if r.get("strategy") == "loader_only"), key=lambda r: r["workers"]):
    pipeline("PyTorch DataLoader, %d workers" % r["workers"], r, r["total_rss_mb"])
first = e["STRATEGIES"].split()[0]
small = next(r for r in runs if r.get("label") == f"streamed-small-{first}")
big = next(r for r in runs if r.get("label") == f"streamed-{first}")
print(f"\nstreamed {first.upper()} job's peak RSS growth: {small['rss_growth_mb']:.0f} MB on "
      f"{int(e['SMALL']):,} images, {big['rss_growth_mb']:.0f} MB on {int(e['N']):,} "
      f"({big['rss_growth_mb'] / max(small['rss_growth_mb'], 1):.2f}x for "
      f"{int(e['N']) / int(e['SMALL']):.0f}x the data)")
print("(ratios: against Kaizen streamed; PyTorch's RSS is the whole process with its workers, "
      "Kaizen's the job's growth of the server's; 'added': what the run added to its process, "
      "PyTorch's as PSS with its workers, shared pages counted once)")
PYEOF
