#!/usr/bin/env bash
# Training throughput: Kaizen's C++ trainer against the same training loop in
# PyTorch (bench/train/train_bench.py) for FULL and FINE_TUNE, and the feature cache
# of FEATURE_EXTRACTION against the same job without it (and against Python). One command: builds kaizen_train_bench,
# interleaves the runners for REPEATS rounds (alternating which goes first),
# prints a table of medians and ratios and appends it to bench/RESULTS.md.
#
# Settings (environment variables):
#   KAIZEN_BUILD_DIR  CMake build folder (default: build)
#   KAIZEN_TRAIN_BENCH  a prebuilt kaizen_train_bench (no build when set)
#   PYTHON            interpreter with torch (default: /usr/bin/python3)
#   REPEATS           rounds (default 5)
#   MODEL             built-in model (default resnet-small)
#   IMAGES EPOCHS     STRATEGY_FULL runs (default 1280 images, 3 epochs)
#   BATCH THREADS     batch size and intra-op threads, both runners (64, 2)
#   FT_IMAGES FT_EPOCHS  FINE_TUNE runs (default: IMAGES, EPOCHS)
#   FE_IMAGES FE_EPOCHS  FEATURE_EXTRACTION runs (default 1280, 3)
#   PLAIN=1           also run a minimal libtorch C++ loop (locates trainer overhead)
#   NOOPT=1           also run the trainer with TorchScript's graph-executor
#                     optimisation off (--graph_executor_optimize=false)
#   MALLOC=1          also run the trainer with glibc malloc keeping large blocks
#                     (MALLOC_MMAP_THRESHOLD_=32 MiB, MALLOC_TRIM_THRESHOLD_=4 GiB,
#                     MALLOC_TOP_PAD_=64 MiB): no mmap/munmap + page faults per tensor
#   OMP_WAIT_POLICY   exported to both runners; default PASSIVE (see README: with
#                     libgomp's default spinning, 2 threads on a loaded 2-core
#                     machine ran 3-4x slower than 1 thread, and the numbers swing)
#   FE_PYTHON=0       skip the Python frozen-backbone loop
#   FT=0              skip the FINE_TUNE runs
#   FE=0              skip the FEATURE_EXTRACTION runs altogether
#   RESULTS           file the section is appended to (default bench/RESULTS.md; "" = none)
#   TRAIN_RUN_DIR     folder for the raw runs (default: a new temporary folder);
#                     plot them with bench/train/train_plot.py TRAIN_RUN_DIR
# Only epochs after the first are compared. See bench/README.md.
set -euo pipefail

cd "$(dirname "$0")/../.."
source bench/common.sh
BUILD_DIR=${KAIZEN_BUILD_DIR:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
REPEATS=${REPEATS:-5}
MODEL=${MODEL:-resnet-small}
IMAGES=${IMAGES:-1280}
EPOCHS=${EPOCHS:-3}
BATCH=${BATCH:-64}
THREADS=${THREADS:-2}
FT_IMAGES=${FT_IMAGES:-$IMAGES}
FT_EPOCHS=${FT_EPOCHS:-$EPOCHS}
FE_IMAGES=${FE_IMAGES:-1280}
FE_EPOCHS=${FE_EPOCHS:-3}
PLAIN=${PLAIN:-0}
NOOPT=${NOOPT:-0}
MALLOC=${MALLOC:-0}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
FE_PYTHON=${FE_PYTHON:-1}
FE=${FE:-1}
FT=${FT:-1}
RESULTS=${RESULTS-bench/RESULTS.md}

if [[ -n "${KAIZEN_TRAIN_BENCH:-}" ]]; then
  BENCH=$KAIZEN_TRAIN_BENCH
else
  # Configured as the tests' build is (scripts/build.sh: the same compiler).
  KAIZEN_BUILD_DIR="$BUILD_DIR" bash scripts/build.sh kaizen_train_bench
  BENCH="$BUILD_DIR/bench/kaizen_train_bench"
fi
[[ -x "$BENCH" ]] || { echo "train_throughput: $BENCH is missing" >&2; exit 1; }
"$PYTHON" -c "import torch" 2>/dev/null || {
  echo "error: $PYTHON cannot import torch (use Debian's /usr/bin/python3)" >&2
  exit 1
}

RUN_DIR=${TRAIN_RUN_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/kaizen-train-bench.XXXXXX")}
mkdir -p "$RUN_DIR"
echo "runs in $RUN_DIR"
common=(--model="$MODEL" --batch_size="$BATCH" --threads="$THREADS")

# Same initial weights and resolved hyperparameters for both runners.
"$BENCH" --strategy=full --images="$IMAGES" --epochs="$EPOCHS" "${common[@]}" \
  --save_model="$RUN_DIR/full.pt" --save_config="$RUN_DIR/full.json" --prepare_only >/dev/null
"$BENCH" --strategy=fine_tune --images="$FT_IMAGES" --epochs="$FT_EPOCHS" "${common[@]}" \
  --save_model="$RUN_DIR/ft.pt" --save_config="$RUN_DIR/ft.json" --prepare_only >/dev/null
"$BENCH" --strategy=feature_extraction --images="$FE_IMAGES" --epochs="$FE_EPOCHS" "${common[@]}" \
  --save_model="$RUN_DIR/fe.pt" --save_config="$RUN_DIR/fe.json" --prepare_only >/dev/null

# run NAME REPEAT COMMAND...: one run, its JSON lines in NAME-rREPEAT.jsonl.
run() {
  local name=$1 repeat=$2
  shift 2
  printf '%s\t%s\t%s\n' "$name" "$repeat" "$(cut -d' ' -f1 /proc/loadavg)" >>"$RUN_DIR/load.tsv"
  "$@" >"$RUN_DIR/$name-r$repeat.jsonl" 2>"$RUN_DIR/$name-r$repeat.err" || {
    echo "error: $name (repeat $repeat) failed:" >&2
    tail -5 "$RUN_DIR/$name-r$repeat.err" >&2
    exit 1
  }
  printf '  %-16s r%s  %s\n' "$name" "$repeat" \
    "$(grep -c '"epoch"' "$RUN_DIR/$name-r$repeat.jsonl") epochs, load $(cut -d' ' -f1 /proc/loadavg)"
}

full_cpp() { run full-cpp "$1" "$BENCH" --strategy=full --images="$IMAGES" --epochs="$EPOCHS" "${common[@]}"; }
full_plain() {
  run full-cpp-plain "$1" "$BENCH" --strategy=full --engine=plain --images="$IMAGES" \
    --epochs="$EPOCHS" "${common[@]}"
}
full_noopt() {
  run full-cpp-noopt "$1" "$BENCH" --strategy=full --graph_executor_optimize=false \
    --images="$IMAGES" --epochs="$EPOCHS" "${common[@]}"
}
full_malloc() {
  run full-cpp-malloc "$1" env MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296 \
    MALLOC_TOP_PAD_=67108864 "$BENCH" --strategy=full --images="$IMAGES" --epochs="$EPOCHS" \
    "${common[@]}"
}
full_python() {
  run full-python "$1" "$PYTHON" bench/train/train_bench.py --model "$RUN_DIR/full.pt" \
    --config "$RUN_DIR/full.json"
}
ft_cpp() {
  run ft-cpp "$1" "$BENCH" --strategy=fine_tune --images="$FT_IMAGES" --epochs="$FT_EPOCHS" \
    "${common[@]}"
}
ft_python() {
  run ft-python "$1" "$PYTHON" bench/train/train_bench.py --model "$RUN_DIR/ft.pt" --config "$RUN_DIR/ft.json"
}
fe_cache() {
  run fe-cpp-cache "$1" "$BENCH" --strategy=feature_extraction --images="$FE_IMAGES" \
    --epochs="$FE_EPOCHS" "${common[@]}"
}
fe_nocache() {
  run fe-cpp-nocache "$1" "$BENCH" --strategy=feature_extraction --no_feature_cache \
    --images="$FE_IMAGES" --epochs="$FE_EPOCHS" "${common[@]}"
}
fe_python() {
  run fe-python "$1" "$PYTHON" bench/train/train_bench.py --model "$RUN_DIR/fe.pt" --config "$RUN_DIR/fe.json"
}

for ((r = 1; r <= REPEATS; r++)); do
  echo "round $r/$REPEATS"
  full=(full_cpp full_python)
  [[ $PLAIN == 1 ]] && full+=(full_plain)
  [[ $NOOPT == 1 ]] && full+=(full_noopt)
  [[ $MALLOC == 1 ]] && full+=(full_malloc)
  ft=()
  [[ $FT == 1 ]] && ft=(ft_cpp ft_python)
  fe=()
  [[ $FE == 1 ]] && fe=(fe_cache fe_nocache)
  [[ $FE == 1 && $FE_PYTHON == 1 ]] && fe+=(fe_python)
  if ((r % 2 == 0)); then  # alternate the order: drift in the load hits both sides
    full=($(printf '%s\n' "${full[@]}" | tac))
    ((${#ft[@]})) && ft=($(printf '%s\n' "${ft[@]}" | tac))
    ((${#fe[@]})) && fe=($(printf '%s\n' "${fe[@]}" | tac))
  fi
  for f in "${full[@]}" "${ft[@]}" "${fe[@]}"; do "$f" "$r"; done
done

table=$("$PYTHON" bench/train/summarize_train_bench.py "$RUN_DIR")
blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || echo unknown)
cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
py_torch=$("$PYTHON" -c "import torch; print(torch.__version__)")
libtorch=$(dpkg-query -W -f='${Version}' libtorch-dev 2>/dev/null || echo unknown)
commit=$(bench_commit)
dirty=""
if [[ $commit == *-dirty ]]; then commit=${commit%-dirty}; dirty=" (+ uncommitted changes)"; fi
fe_settings="FEATURE_EXTRACTION $FE_IMAGES images x $FE_EPOCHS epochs"
[[ $FE == 1 ]] || fe_settings="FEATURE_EXTRACTION not run"
ft_settings="FINE_TUNE $FT_IMAGES images x $FT_EPOCHS epochs (top $(sed -n 's/.*"trainable_blocks": \([0-9]*\).*/\1/p' "$RUN_DIR/ft.json") block(s) + head)"
[[ $FT == 1 ]] || ft_settings="FINE_TUNE not run"
section=$(
  cat <<EOF
## $(date -u '+%Y-%m-%d %H:%M UTC') — commit $commit$dirty

Machine: $(nproc) cores, $cpu; libtorch $libtorch (C++), torch $py_torch ($PYTHON);
BLAS $blas; OMP_WAIT_POLICY=$OMP_WAIT_POLICY, OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}, OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-unset};
load after the runs: $(cut -d' ' -f1-3 /proc/loadavg).
Settings: $MODEL, batch $BATCH, $THREADS threads, $REPEATS interleaved rounds;
FULL $IMAGES images x $EPOCHS epochs; $ft_settings; $fe_settings.

$table
EOF
)
echo
echo "$section"
if [[ -n "$RESULTS" ]]; then
  [[ -f "$RESULTS" ]] || printf '# Benchmark results\n\nSections appended by bench/train/train_throughput.sh (bench/README.md).\n' >"$RESULTS"
  printf '\n%s\n' "$section" >>"$RESULTS"
  echo
  echo "appended to $RESULTS; raw runs in $RUN_DIR"
fi
