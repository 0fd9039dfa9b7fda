#!/usr/bin/env bash
# The hardware ceiling and the trainer's share of it, one command:
#   (a) dense float32 matmul GFLOP/s with torch.mm at n = 512, 1024, 2048
#       (2*n^3 flops a product, torch.set_num_threads(THREADS));
#   (b) the FLOPs per training image of the model (default resnet-small at
#       1x28x28), counted from the aten convolution / matmul calls of the very
#       TorchScript model the trainer trains (kaizen_train_bench --save_model
#       --prepare_only), training = 3 x forward;
#   (c) the trainer's images/s (kaizen_train_bench --strategy=full, epochs after
#       the first) -> model GFLOP/s = images/s x training FLOPs/image, and its
#       share of the matmul ceiling.
# The matmul and the trainer run interleaved for ROUNDS rounds (the order
# alternates); it prints medians, the median of per-round shares, and appends
# every measurement plus a summary as JSON lines to $CEILING_RESULTS.
#
# Usage: bench/ceiling/ceiling_bench.sh
# Settings (environment):
#   ROUNDS=3            rounds (matmul at every size + one trainer run each)
#   THREADS=$(nproc)    torch.set_num_threads for the matmul, --threads for the trainer
#   SIZES="512 1024 2048"  MIN_SECONDS=1.0  (each matmul measurement lasts at least this)
#   MODEL=resnet-small  IMAGES=1280  EPOCHS=3  BATCH=64   (the trainer run)
#   PYTHON=/usr/bin/python3   (Debian's, with torch 1.13)
#   CEILING_RESULTS=bench/runs/history/ceiling_results.jsonl   ("" = append nothing)
#   CEILING_RUN_DIR=DIR  where the raw runs go (default: a temporary folder,
#                        removed at the end when nothing is appended)
#   KAIZEN_TRAIN_BENCH=PATH   a prebuilt kaizen_train_bench; otherwise it is built
#                             in ${KAIZEN_BUILD_DIR:-build} like train_throughput.sh
#   OMP_WAIT_POLICY     exported to both; default PASSIVE (bench/README.md, "Threads")
# Quick look: ROUNDS=1 MIN_SECONDS=0.3 IMAGES=128 EPOCHS=2 CEILING_RESULTS= bench/ceiling/ceiling_bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/common.sh
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-$(nproc)}
SIZES=${SIZES:-512 1024 2048}
MIN_SECONDS=${MIN_SECONDS:-1.0}
MODEL=${MODEL:-resnet-small}
IMAGES=${IMAGES:-1280}
EPOCHS=${EPOCHS:-3}
BATCH=${BATCH:-64}
PYTHON=${PYTHON:-/usr/bin/python3}
RESULTS=${CEILING_RESULTS-bench/runs/history/ceiling_results.jsonl}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

if [[ -n "${KAIZEN_TRAIN_BENCH:-}" ]]; then
  BENCH=$KAIZEN_TRAIN_BENCH
else
  BUILD_DIR=${KAIZEN_BUILD_DIR:-build}
  # Configured as the tests' build is (scripts/build.sh: the same compiler).
  KAIZEN_BUILD_DIR="$BUILD_DIR" bash scripts/build.sh kaizen_train_bench >/dev/null
  BENCH="$BUILD_DIR/bench/kaizen_train_bench"
fi
[[ -x "$BENCH" ]] || { echo "ceiling_bench: $BENCH is missing" >&2; exit 1; }
"$PYTHON" -c "import torch" 2>/dev/null || {
  echo "ceiling_bench: $PYTHON cannot import torch (use Debian's /usr/bin/python3)" >&2
  exit 1
}

# The raw runs: CEILING_RUN_DIR (kept), or a temporary folder that is kept
# only when the results are appended (the message names it) and removed
# otherwise.
if [[ -n "${CEILING_RUN_DIR:-}" ]]; then
  RUN_DIR=$CEILING_RUN_DIR
  mkdir -p "$RUN_DIR"
else
  RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/kaizen-ceiling-bench.XXXXXX")
  [[ -n "$RESULTS" ]] || trap 'rm -rf "$RUN_DIR"' EXIT
fi
echo "runs in $RUN_DIR" >&2
trainer_args=(--strategy=full --model="$MODEL" --images="$IMAGES" --epochs="$EPOCHS"
  --batch_size="$BATCH" --threads="$THREADS")

# (b) The model the trainer starts from, as TorchScript; count its FLOPs.
"$BENCH" "${trainer_args[@]}" --save_model="$RUN_DIR/model.pt" --prepare_only >"$RUN_DIR/prepare.jsonl"
"$PYTHON" bench/ceiling/ceiling_bench.py flops --model "$RUN_DIR/model.pt" >"$RUN_DIR/flops.json"

matmul() {
  "$PYTHON" bench/ceiling/ceiling_bench.py matmul --threads "$THREADS" --sizes "${SIZES// /,}" \
    --min_seconds "$MIN_SECONDS" >"$RUN_DIR/matmul-r$1.jsonl"
  echo "  round $1 matmul   $("$PYTHON" -c 'import json,sys; print("  ".join("n=%d %.2f GFLOP/s" % (d["n"], d["gflops"]) for d in map(json.loads, open(sys.argv[1]))))' "$RUN_DIR/matmul-r$1.jsonl")" >&2
}
trainer() {
  "$BENCH" "${trainer_args[@]}" >"$RUN_DIR/trainer-r$1.jsonl" 2>"$RUN_DIR/trainer-r$1.err" || {
    echo "ceiling_bench: kaizen_train_bench failed (round $1):" >&2
    tail -5 "$RUN_DIR/trainer-r$1.err" >&2
    exit 1
  }
  echo "  round $1 trainer  $("$PYTHON" -c 'import json,sys; print("  ".join("epoch %d %.1f img/s" % (d["epoch"], d["images_per_second"]) for d in map(json.loads, filter(lambda l: "\"epoch\":" in l, open(sys.argv[1])))))' "$RUN_DIR/trainer-r$1.jsonl")" >&2
}

for ((r = 1; r <= ROUNDS; r++)); do
  if ((r % 2 == 1)); then matmul "$r"; trainer "$r"; else trainer "$r"; matmul "$r"; fi
done

commit=$(bench_commit)
RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)-$$ DATE=$(date -u +%FT%TZ) COMMIT=$commit \
  CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1) \
  BLAS=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || echo unknown) \
  LIBTORCH=$(dpkg-query -W -f='${Version}' libtorch-dev 2>/dev/null || echo unknown) \
  THREADS=$THREADS MODEL=$MODEL IMAGES=$IMAGES EPOCHS=$EPOCHS BATCH=$BATCH ROUNDS=$ROUNDS \
  MIN_SECONDS=$MIN_SECONDS "$PYTHON" - "$RUN_DIR/meta.json" <<'PYEOF'
import json, os, sys
import torch
e = os.environ
json.dump({"run_id": e["RUN_ID"], "date": e["DATE"], "commit": e["COMMIT"],
           "nproc": len(os.sched_getaffinity(0)), "cpu_model": e["CPU_MODEL"],
           "torch": torch.__version__, "libtorch": e["LIBTORCH"], "blas": e["BLAS"],
           "threads": int(e["THREADS"]), "omp_wait_policy": e["OMP_WAIT_POLICY"],
           "model": e["MODEL"], "images": int(e["IMAGES"]), "epochs": int(e["EPOCHS"]),
           "batch_size": int(e["BATCH"]), "rounds": int(e["ROUNDS"]),
           "min_seconds": float(e["MIN_SECONDS"]),
           "loadavg": round(os.getloadavg()[0], 2)}, open(sys.argv[1], "w"))
PYEOF
"$PYTHON" bench/ceiling/ceiling_bench.py summarize "$RUN_DIR"
if [[ -n "$RESULTS" ]]; then
  mkdir -p "$(dirname "$RESULTS")"
  cat "$RUN_DIR/results.jsonl" >>"$RESULTS"
  echo "appended $(wc -l <"$RUN_DIR/results.jsonl") lines to $RESULTS; raw runs in $RUN_DIR" >&2
fi
