#!/usr/bin/env bash
# The whole benchmark suite, one command, one run: installs the Debian
# packages, builds what the benchmarks need once, then runs every benchmark in
# bench/ (each side by side, repeated, medians and ratios), draws the plots and
# writes one dated section with the commit and the machine into
# bench/RESULTS.md (newest suite run first). Raw outputs go to
# bench/runs/<run id>/; the JSON Lines histories in bench/runs/history/ grow by
# this run's rows. Only bench/RESULTS.md and the plots are committed.
#
#   1. hardware ceiling      bench/ceiling/ceiling_bench.sh   (matmul GFLOP/s, trainer's share)
#   2. uploads               bench/upload/upload_bench.sh    (IDX pair, image folder, tar.gz)
#   3. training throughput   bench/train/train_throughput.sh (FULL, FINE_TUNE, FEATURE_EXTRACTION
#                                                     with and without the cache, vs PyTorch)
#   4. end to end            bench/e2e/e2e_folder_bench.sh (image folder: Kaizen vs ImageFolder+DataLoader)
#   5. serving               bench/predict/predict_bench.sh   (concurrency 1/8/32/128, batching on/off,
#                                                     vs a grpcio + torch server), per model
#   6. frozen-prefix cache   bench/train/prefix_cache_bench.sh (FINE_TUNE, cache off vs on)
#   7. memory format         bench/train/memory_format_bench.sh (channels_last vs contiguous)
#   8. idle reloads          bench/predict/reload_bench.sh    (every version loaded vs idle models not)
#   9. model instances       bench/predict/instances_bench.sh (1 executor of 2 threads vs 2 of 1 vs 1 of 1)
#  10. batch shapes          bench/predict/batch_shape_bench.sh (every batch size 1..32: does padding pay?)
#  11. time to accuracy      bench/e2e/time_to_accuracy.sh (FEATURE_EXTRACTION and FINE_TUNE: Kaizen vs
#                                                     the textbook ImageFolder+DataLoader+Adam script)
#
# Usage: bench/run_suite.sh
# Settings (environment; each benchmark's own settings also apply, see its header):
#   SUITE="ceiling upload train e2e predict prefix memformat reload instances batchshape tta"   which benchmarks, in this order
#   SERVING_MODELS="resnet-small"              built-in architectures served ("resnet-small cnn-small")
#   TRAIN_REPEATS=3  TRAIN_EPOCHS=4            training-throughput rounds and epochs (FULL, FINE_TUNE)
#   E2E_R=2  E2E_EPOCHS=5  E2E_PER_CLASS=200  E2E_WORKERS="0 2"
#   PREDICT_R=3  PREDICT_D=10                  serving rounds and measured seconds per run
#   UPLOAD_R=5  CEILING_ROUNDS=3
#   PREFIX_IMAGES=6000  PREFIX_EPOCHS=3  PREFIX_REPEATS=3
#   MEMFORMAT_IMAGES=6000  MEMFORMAT_EPOCHS=3  MEMFORMAT_REPEATS=2
#   RELOAD_IMAGES=1000  RELOAD_EPOCHS=8  RELOAD_REPEATS=3
#   INSTANCES_R=3  INSTANCES_D=8  INSTANCES_CONCURRENCY="1 2 4 8 32"  INSTANCES_CONFIGS="1x2 2x1 1x1"
#   BATCHSHAPE_ROUNDS=3  BATCHSHAPE_MAX=32  BATCHSHAPE_MODELS="resnet-small cnn-small resnet18"
#   TTA_R=2  TTA_PER_CLASS=200  TTA_EPOCHS=10  TTA_WORKERS="2"  TTA_TEST_PER_CLASS=1000
#   TTA_PRETRAIN_PER_CLASS=2000  TTA_PRETRAIN_EPOCHS=2
#   SUITE_RESULTS=bench/RESULTS.md             ("" = write no section)
#   SUITE_OUT=bench/runs/<run id>              raw outputs
#   PLOT_DIR=                                  all PNG plots in this folder instead of
#                                              each beside its benchmark (bench/<name>/)
#   KAIZEN_BUILD_DIR=build
#   KAIZEN_BIN_DIR=                            a build folder that already holds
#                                              kaizen-server, kaizenctl and
#                                              bench/kaizen_train_bench: used as it
#                                              is, with no set-up and no build
#                                              (the smoke test runs the tree under test)
# It takes about 40 minutes on 2 cores (2,397 s for all eleven on 2026-12-05). See
# bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh
ROOT=$(pwd)

SUITE=${SUITE:-ceiling upload train e2e predict prefix memformat reload instances batchshape tta}
SERVING_MODELS=${SERVING_MODELS:-resnet-small}
BUILD=${KAIZEN_BIN_DIR:-${KAIZEN_BUILD_DIR:-build}}
SUITE_RESULTS=${SUITE_RESULTS-bench/RESULTS.md}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
PY=/usr/bin/python3

if [[ -z ${KAIZEN_BIN_DIR:-} ]]; then
  bash scripts/setup.sh
  bash scripts/build.sh kaizen-server kaizenctl kaizen_train_bench kaizen_ingest_stages_bench
fi
for b in kaizen-server kaizenctl bench/kaizen_train_bench; do
  [[ -x $BUILD/$b ]] || { echo "run_suite: $BUILD/$b is missing" >&2; exit 1; }
done

commit=$(bench_commit)
dirty=""
if [[ $commit == *-dirty ]]; then commit=${commit%-dirty}; dirty=" (+ uncommitted changes)"; fi
RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)-$commit
OUT=${SUITE_OUT:-bench/runs/$RUN_ID}
PLOT_DIR=${PLOT_DIR:-}
mkdir -p "$OUT"
[ -z "$PLOT_DIR" ] || mkdir -p "$PLOT_DIR"
# plot FOLDER NAME: where the plot NAME.png of bench/FOLDER goes.
plot() { if [ -n "$PLOT_DIR" ]; then echo "$PLOT_DIR/$2.png"; else echo "bench/$1/$2.png"; fi; }
case $OUT in /*) ;; *) OUT=$ROOT/$OUT ;; esac
started=$(date +%s)
echo "suite $RUN_ID: $SUITE; raw outputs in $OUT" >&2

# step NAME COMMAND...: stdout (the benchmark's summary) to OUT/NAME.txt, then
# the terminal; stderr (its progress) to OUT/NAME.log and the terminal; the seconds it took to
# OUT/timings.tsv. A failed benchmark is reported and the suite goes on.
failed=()
step() {
  local name=$1
  shift
  echo >&2
  echo "== $name: $*" >&2
  local t0 rc
  t0=$(date +%s)
  set +e
  "$@" 2>&1 >"$OUT/$name.txt" | tee "$OUT/$name.log" >&2
  rc=${PIPESTATUS[0]}
  set -e
  cat "$OUT/$name.txt"
  printf '%s\t%s\t%s\n' "$name" "$(( $(date +%s) - t0 ))" "$rc" >>"$OUT/timings.tsv"
  if [ "$rc" != 0 ]; then
    failed+=("$name (exit $rc)")
    echo "suite: $name failed with exit $rc; see $OUT/$name.log" >&2
  fi
}

for bench in $SUITE; do
  case $bench in
    ceiling)
      step ceiling env KAIZEN_TRAIN_BENCH="$BUILD/bench/kaizen_train_bench" \
        ROUNDS="${CEILING_ROUNDS:-3}" CEILING_RUN_DIR="$OUT/ceiling-runs" bench/ceiling/ceiling_bench.sh ;;
    upload)
      step upload env KAIZEN_BIN_DIR="$BUILD" R="${UPLOAD_R:-5}" bench/upload/upload_bench.sh ;;
    train)
      step train env KAIZEN_TRAIN_BENCH="$BUILD/bench/kaizen_train_bench" REPEATS="${TRAIN_REPEATS:-3}" \
        EPOCHS="${TRAIN_EPOCHS:-4}" TRAIN_RUN_DIR="$OUT/train-runs" RESULTS= \
        bench/train/train_throughput.sh
      $PY bench/train/train_plot.py "$OUT/train-runs" --out "$(plot train train_loss_curves)" >&2 || true ;;
    e2e)
      step e2e env KAIZEN_BIN_DIR="$BUILD" R="${E2E_R:-2}" EPOCHS="${E2E_EPOCHS:-5}" \
        PER_CLASS="${E2E_PER_CLASS:-200}" WORKERS="${E2E_WORKERS:-0 2}" bench/e2e/e2e_folder_bench.sh
      $PY bench/e2e/e2e_plot.py "${E2E_RESULTS:-bench/runs/history/e2e_results.jsonl}" \
        --out "$(plot e2e e2e_learning_curves)" >&2 || true ;;
    predict)
      for arch in $SERVING_MODELS; do
        step "predict-$arch" env KAIZEN_BIN_DIR="$BUILD" BASE_ARCH="$arch" \
          R="${PREDICT_R:-3}" D="${PREDICT_D:-10}" bench/predict/predict_bench.sh
        $PY bench/predict/predict_plot.py "${PREDICT_RESULTS:-bench/runs/history/predict_results.jsonl}" \
          --out "$(plot predict "predict_${arch//-/_}")" >&2 || true
      done ;;
    prefix)
      step prefix env KAIZEN_BIN_DIR="$BUILD" IMAGES="${PREFIX_IMAGES:-6000}" \
        EPOCHS="${PREFIX_EPOCHS:-3}" REPEATS="${PREFIX_REPEATS:-3}" bench/train/prefix_cache_bench.sh ;;
    memformat)
      step memformat env KAIZEN_BIN_DIR="$BUILD" IMAGES="${MEMFORMAT_IMAGES:-6000}" \
        EPOCHS="${MEMFORMAT_EPOCHS:-3}" REPEATS="${MEMFORMAT_REPEATS:-2}" \
        bench/train/memory_format_bench.sh ;;
    reload)
      step reload env KAIZEN_BIN_DIR="$BUILD" IMAGES="${RELOAD_IMAGES:-1000}" \
        EPOCHS="${RELOAD_EPOCHS:-8}" REPEATS="${RELOAD_REPEATS:-3}" bench/predict/reload_bench.sh ;;
    instances)
      step instances env KAIZEN_BIN_DIR="$BUILD" R="${INSTANCES_R:-3}" D="${INSTANCES_D:-8}" \
        WARMUP="${INSTANCES_WARMUP:-2}" CONCURRENCY="${INSTANCES_CONCURRENCY:-1 2 4 8 32}" \
        CONFIGS="${INSTANCES_CONFIGS:-1x2 2x1 1x1}" TRAIN_IMAGES="${INSTANCES_TRAIN_IMAGES:-500}" \
        BASE_ARCH="${INSTANCES_ARCH:-resnet-small}" bench/predict/instances_bench.sh ;;
    batchshape)
      step batchshape env KAIZEN_BIN_DIR="$BUILD" ROUNDS="${BATCHSHAPE_ROUNDS:-3}" \
        MAX_BATCH="${BATCHSHAPE_MAX:-32}" MIN_SECONDS="${BATCHSHAPE_MIN_SECONDS:-0.05}" \
        MODELS="${BATCHSHAPE_MODELS:-resnet-small cnn-small resnet18}" \
        bench/predict/batch_shape_bench.sh ;;
    tta)
      step tta env KAIZEN_BIN_DIR="$BUILD" R="${TTA_R:-2}" PER_CLASS="${TTA_PER_CLASS:-200}" \
        EPOCHS="${TTA_EPOCHS:-10}" WORKERS="${TTA_WORKERS:-2}" \
        TEST_PER_CLASS="${TTA_TEST_PER_CLASS:-1000}" PRETRAIN_PER_CLASS="${TTA_PRETRAIN_PER_CLASS:-2000}" \
        PRETRAIN_EPOCHS="${TTA_PRETRAIN_EPOCHS:-2}" bench/e2e/time_to_accuracy.sh ;;
    *)
      echo "suite: unknown benchmark '$bench' (ceiling upload train e2e predict prefix memformat reload instances batchshape tta)" >&2
      exit 2 ;;
  esac
done

total=$(( $(date +%s) - started ))
echo "suite $RUN_ID done in ${total} s" >&2
[ -n "$SUITE_RESULTS" ] || exit $(( ${#failed[@]} > 0 ))

# One section: the machine, the command, then each benchmark's own summary.
section="$OUT/section.md"
{
  echo "## Suite run $(date -u '+%Y-%m-%d %H:%M UTC') — commit $commit$dirty"
  echo
  echo "\`bench/run_suite.sh\` (run \`$RUN_ID\`, ${total} s in all; raw outputs in"
  echo "\`${OUT#$ROOT/}/\`). Machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1),"
  echo "$(free -g | awk '/^Mem:/ {print $2}') GiB; libtorch $(dpkg-query -W -f='${Version}' libtorch-dev 2>/dev/null || echo unknown),"
  echo "torch $($PY -c 'import torch; print(torch.__version__)' 2>/dev/null || echo unknown) for the Python sides;"
  echo "BLAS $(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || echo unknown);"
  echo "OMP_WAIT_POLICY=$OMP_WAIT_POLICY; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
  if ((${#failed[@]})); then echo; echo "**Failed:** ${failed[*]}"; fi
  echo
  echo "| benchmark | seconds | exit |"
  echo "|---|---:|---:|"
  while IFS=$'\t' read -r name secs rc; do echo "| $name | $secs | $rc |"; done <"$OUT/timings.tsv"
  for bench in $SUITE; do
    case $bench in
      predict) names=(); for arch in $SERVING_MODELS; do names+=("predict-$arch"); done ;;
      *) names=("$bench") ;;
    esac
    for name in "${names[@]}"; do
      [ -s "$OUT/$name.txt" ] || continue
      echo
      echo "### $name"
      echo
      if [ "$name" = train ]; then
        # train_throughput.sh prints Markdown already.
        sed -n '/^## /,$p' "$OUT/$name.txt" | sed '1d; /^appended to/d; /^runs in/d; s/^### /#### /'
        echo
        echo "![training loss per epoch](train/train_loss_curves.png)"
      else
        echo '```'
        grep -v '^runs in ' "$OUT/$name.txt"
        echo '```'
        case $name in
          e2e) echo; echo "![learning curves against the wall clock](e2e/e2e_learning_curves.png)" ;;
          predict-*) arch=${name#predict-}; echo; echo "![serving, $arch](predict/predict_${arch//-/_}.png)" ;;
        esac
      fi
    done
  done
} >"$section"

marker='<!-- suite runs: newest first, inserted by bench/run_suite.sh -->'
[ -f "$SUITE_RESULTS" ] || printf '# Benchmark results\n\n%s\n' "$marker" >"$SUITE_RESULTS"
if grep -qF "$marker" "$SUITE_RESULTS"; then
  $PY - "$SUITE_RESULTS" "$section" "$marker" <<'PYEOF'
import sys
path, section, marker = sys.argv[1:4]
text = open(path).read()
new = open(section).read().rstrip("\n")
open(path, "w").write(text.replace(marker, marker + "\n\n" + new + "\n", 1))
PYEOF
else
  printf '\n%s\n' "$(cat "$section")" >>"$SUITE_RESULTS"
fi
echo "section written to $SUITE_RESULTS (from $section)" >&2
exit $(( ${#failed[@]} > 0 ))
