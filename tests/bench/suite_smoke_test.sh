#!/usr/bin/env bash
# Smoke test of the benchmark suite: bench/run_suite.sh with every benchmark
# cut to seconds (one round, a few images, two concurrencies), everything it
# writes redirected to a temporary folder. It checks that every step ran and
# exited 0, that the section it wrote holds each benchmark's figures (FULL,
# FINE_TUNE and FEATURE_EXTRACTION rows, the three servers at each
# concurrency, the three uploads, the ceiling, both e2e runners, the prefix
# cache's ratios and loss difference, both memory-format rows, the idle-reload
# ratio and version, the model-instance ratios, the time-to-accuracy ratios),
# that the section was inserted at the marker of an existing results file
# without losing what was there, that the plots exist, and that no benchmark
# left a temporary file behind (TMPDIR points into its own folder). These four
# benchmarks (prefix cache, memory format, idle reloads, model instances) have
# no smoke test of their own: this is it. The figures themselves are
# meaningless at this size; bench/run_suite.sh with its defaults makes real ones.
# It runs the binaries of BUILD_DIR (the tree under test) as they are: no
# set-up script and no build inside the test.
#
# Usage: suite_smoke_test.sh BUILD_DIR
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 BUILD_DIR" >&2
  exit 2
fi
BUILD_DIR=$(cd "$1" && pwd)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/kaizen-suite-smoke.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

fail() {
  echo "suite smoke: $*" >&2
  [[ -f $TMP/out.txt ]] && tail -40 "$TMP/out.txt" >&2
  exit 1
}

marker='<!-- suite runs: newest first, inserted by bench/run_suite.sh -->'
printf '# Results\n\nintro line\n\n%s\n\n## an older section\n\nolder text\n' "$marker" >"$TMP/RESULTS.md"

# Every benchmark's temporary files go under here, which must be empty after.
mkdir "$TMP/tmp"
(
  cd "$ROOT"
  TMPDIR=$TMP/tmp KAIZEN_BIN_DIR=$BUILD_DIR SUITE_RESULTS=$TMP/RESULTS.md SUITE_OUT=$TMP/runs PLOT_DIR=$TMP/plots \
    CEILING_ROUNDS=1 MIN_SECONDS=0.2 SIZES="256 512" IMAGES=128 CEILING_RESULTS= \
    UPLOAD_R=1 N=100 UPLOAD_RESULTS= \
    TRAIN_REPEATS=1 TRAIN_EPOCHS=2 FT_IMAGES=128 FE_IMAGES=128 FE_EPOCHS=2 \
    E2E_R=1 E2E_EPOCHS=2 E2E_PER_CLASS=10 E2E_WORKERS=0 E2E_RESULTS=$TMP/e2e.jsonl \
    PREDICT_R=1 PREDICT_D=1 WARMUP=0.5 CONCURRENCY="1 4" TRAIN_IMAGES=200 \
    PREDICT_RESULTS=$TMP/predict.jsonl \
    PREFIX_IMAGES=256 PREFIX_EPOCHS=2 PREFIX_REPEATS=1 \
    MEMFORMAT_IMAGES=256 MEMFORMAT_EPOCHS=2 MEMFORMAT_REPEATS=1 \
    RELOAD_IMAGES=100 RELOAD_EPOCHS=2 RELOAD_REPEATS=1 \
    INSTANCES_R=1 INSTANCES_D=1 INSTANCES_WARMUP=0 INSTANCES_CONCURRENCY="1 4" \
    INSTANCES_TRAIN_IMAGES=100 INSTANCES_ARCH=cnn-small INSTANCES_RESULTS=$TMP/instances.jsonl \
    BATCHSHAPE_ROUNDS=1 BATCHSHAPE_MAX=3 BATCHSHAPE_MIN_SECONDS=0.01 BATCHSHAPE_MODELS=cnn-small \
    TTA_R=1 TTA_PER_CLASS=10 TTA_EPOCHS=2 TTA_WORKERS=0 TTA_TEST_PER_CLASS=20 \
    TTA_PRETRAIN_PER_CLASS=20 TTA_PRETRAIN_EPOCHS=1 TTA_RESULTS=$TMP/tta.jsonl \
    bash bench/run_suite.sh
) >"$TMP/out.txt" 2>&1 || fail "bench/run_suite.sh exited $?"

left=$(ls -A "$TMP/tmp")
[[ -z $left ]] || fail "the benchmarks left temporary files behind: $(echo $left)"

section=$TMP/runs/section.md
[[ -s $section ]] || fail "no section.md"
for step in ceiling upload train e2e predict-resnet-small prefix memformat reload instances batchshape tta; do
  grep -q "^| $step | [0-9]* | 0 |$" "$section" || fail "step $step missing or failed in the timings table"
  [[ -s $TMP/runs/$step.txt ]] || fail "no summary for $step"
done
grep -q '\*\*Failed:\*\*' "$section" && fail "the section lists failed steps"

expect() {  # PATTERN WHAT
  grep -qE "$1" "$section" || fail "the section lacks $2 (/$1/)"
}
expect 'n = 512 +[0-9.]+' "the matmul ceiling"
expect 'share of the matmul ceiling \(n = [0-9]+\) +[0-9.]+%' "the trainer's share of the ceiling"
expect '^IDX pair \(\.gz\) +[0-9.]+ +60000' "the IDX upload"
expect '^image folder \(tar on the fly\) ' "the folder upload"
expect '^gunzip isa-l +[0-9.]+ +[0-9.]+ ' "the IDX ingest stages"
expect '^image folder \(\.tar\.gz\) ' "the tar.gz upload"
expect '^#### STRATEGY_FULL' "the FULL table"
expect '^#### STRATEGY_FINE_TUNE' "the FINE_TUNE table"
expect '^#### STRATEGY_FEATURE_EXTRACTION' "the FEATURE_EXTRACTION table"
expect 'FINE_TUNE C\+\+/Python = [0-9.]+x' "the FINE_TUNE ratio"
expect 'Cache speed-up per epoch' "the cache speed-up"
expect '^kaizen +[0-9.]+ ' "the Kaizen e2e row"
expect '^pytorch-w0 +[0-9.]+ ' "the PyTorch e2e row"
expect '^off / on: epoch 1 [0-9.]+x, later epochs [0-9.]+x' "the frozen-prefix cache ratios"
expect 'training losses: [0-9.]+e-(0[6-9]|[1-9][0-9])$|training losses: 0[.]00e[+]00$' \
  "the frozen-prefix cache's loss difference (at most 1e-6)"
expect '^full +[0-9.]+ +[0-9.]+ +[0-9.]+x' "the channels_last FULL row"
expect '^fine_tune +[0-9.]+ +[0-9.]+ +[0-9.]+x' "the channels_last FINE_TUNE row"
expect '^job time, always / idle: [0-9.]+x' "the idle-reload ratio"
expect '^2x1 +4 +[0-9.]+ +[0-9.]+ +[0-9.]+$' "the 2-instance ratio row at concurrency 4"
expect '^ +3 +[0-9.]+ +[0-9.]+ +3 +1[.]00 ' "the batch-shape row of the largest size"
expect '^verdict cnn-small 1t: ' "the batch-shape verdict"
expect '^time to accuracy, pytorch-w0 / kaizen: [0-9.]+x \(rounds: [0-9.]+\); goal >= 3.0x: (met|not met)$' \
  "the FEATURE_EXTRACTION time-to-accuracy ratio"
expect '^time to accuracy, pytorch-w0 / kaizen: [0-9.]+x \(rounds: [0-9.]+\); goal >= 1.5x: (met|not met)$' \
  "the FINE_TUNE time-to-accuracy ratio"
expect '^first request after the job: version ([0-9]+) \(the job.s last: [0-9]+\)$' "the version served after the job"
for c in 1 4; do
  for mode in 'kaizen  batching on' 'kaizen  batching off' 'python  one at a time'; do
    expect "^$mode +$c +[0-9.]+ " "the serving row '$mode' at concurrency $c"
  done
done

# Inserted right after the marker; the older content is still there.
results=$TMP/RESULTS.md
[[ $(grep -c '^## Suite run ' "$results") == 1 ]] || fail "RESULTS.md should hold one suite section"
after=$(grep -n -A2 -F "$marker" "$results" | sed -n '3p')
[[ $after == *"## Suite run "* ]] || fail "the suite section is not right after the marker (got: $after)"
grep -q '^older text$' "$results" || fail "the older content of RESULTS.md was lost"
grep -q '^intro line$' "$results" || fail "the intro of RESULTS.md was lost"

for png in train_loss_curves e2e_learning_curves predict_resnet_small; do
  [[ -s $TMP/plots/$png.png ]] || fail "plot $png.png missing"
  head -c 8 "$TMP/plots/$png.png" | od -An -c | grep -q 'P   N   G' || fail "$png.png is not a PNG"
done
[[ -n $(ls "$TMP/runs/train-runs"/ft-python-r1.jsonl 2>/dev/null) ]] || fail "the FINE_TUNE Python runs are missing"
echo "suite smoke: every benchmark ran, the section and the plots are complete"
