#!/usr/bin/env bash
# Data-parallel scaling on this machine (issue 19): the same job as one
# kaizen-worker process and as WORLD_SIZE Gloo ranks on loopback (one
# intra-op thread each by default, so W ranks use W cores), alternating,
# REPEATS rounds; prints each round's training images/s, the W/1 ratio, rank
# 0's share of wall time in collectives, and the medians.
#
# Usage: [WORLD_SIZE=2] [THREADS=1] [MODEL=resnet-small] [STRATEGY=FULL]
#        [IMAGES=4000] [EPOCHS=3] [BATCH=64] [REPEATS=3]
#        [KAIZEN_BIN_DIR=build] bench/distributed/data_parallel_bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${KAIZEN_BIN_DIR:-${KAIZEN_BUILD_DIR:-build}}
if [[ -z ${KAIZEN_BIN_DIR:-} ]]; then
  bash scripts/build.sh kaizen_data_parallel_bench kaizen-worker >/dev/null
fi
for b in bench/kaizen_data_parallel_bench kaizen-worker; do
  [[ -x $BUILD/$b ]] || { echo "data_parallel_bench: $BUILD/$b is missing" >&2; exit 1; }
done
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
"$BUILD/bench/kaizen_data_parallel_bench" --worker="$BUILD/kaizen-worker" \
  --world_size="${WORLD_SIZE:-2}" --threads="${THREADS:-1}" --model="${MODEL:-resnet-small}" \
  --strategy="${STRATEGY:-FULL}" --images="${IMAGES:-4000}" --epochs="${EPOCHS:-3}" \
  --batch="${BATCH:-64}" --repeats="${REPEATS:-3}"
