#!/usr/bin/env bash
# Preferred batch sizes (issue 18, item 3): would padding a batch up to some
# size make it faster? bench/predict/batch_shape_probe.py times the models as
# serving prepares them (frozen, optimize_for_inference) at every batch size
# 1..MAX_BATCH with Debian's python3-torch (the LibTorch kaizen-server links),
# at 1 and 2 intra-op threads (the default CPU instance has 1), and computes
# at which sizes, if any, a larger batch ran faster in every round.
# Models: the built-ins resnet-small and cnn-small (written by
# kaizen_train_bench --save_model --prepare_only) and torchvision's resnet18
# (the test fixture, when the build has made it).
#
# Usage: [MAX_BATCH=32] [ROUNDS=3] [THREADS=1,2] [MIN_SECONDS=0.05]
#        [MODELS="resnet-small cnn-small resnet18"] [KAIZEN_BIN_DIR=build]
#        bench/predict/batch_shape_bench.sh
# Smoke: MAX_BATCH=4 ROUNDS=1 MIN_SECONDS=0.01 MODELS=cnn-small KAIZEN_BIN_DIR=build bench/predict/batch_shape_bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${KAIZEN_BIN_DIR:-${KAIZEN_BUILD_DIR:-build}}
if [ -z "${KAIZEN_BIN_DIR:-}" ]; then bash scripts/build.sh kaizen_train_bench >/dev/null; fi
BENCH=$BUILD/bench/kaizen_train_bench
[[ -x $BENCH ]] || { echo "batch_shape_bench: $BENCH is missing" >&2; exit 1; }
MODELS=${MODELS:-resnet-small cnn-small resnet18}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/batch-shape-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

specs=()
for m in $MODELS; do
  case $m in
    resnet-small | cnn-small)
      "$BENCH" --model="$m" --images=64 --epochs=1 --save_model="$WORK/$m.pt" --prepare_only >/dev/null
      specs+=("$m=$WORK/$m.pt:1,28,28") ;;
    resnet18)
      fixture=${RESNET18:-$BUILD/tests/fixtures/resnet18.pt}
      if [[ -f $fixture ]]; then specs+=("resnet18=$fixture:3,224,224")
      else echo "batch_shape_bench: $fixture is missing (built with the tests); resnet18 skipped" >&2; fi ;;
    *) echo "batch_shape_bench: unknown model $m" >&2; exit 2 ;;
  esac
done
/usr/bin/python3 bench/predict/batch_shape_probe.py "${specs[@]}" --max_batch="${MAX_BATCH:-32}" \
  --rounds="${ROUNDS:-3}" --threads="${THREADS:-1,2}" --min_seconds="${MIN_SECONDS:-0.05}"
