#!/usr/bin/env bash
# channels_last against the contiguous memory format in Kaizen's trainer
# (issue 18, item 5), side by side: kaizen_train_bench runs the same job
# with --channels_last and without, interleaved for REPEATS (2) rounds
# (alternating which goes first), for each of STRATEGIES (full, fine_tune:
# the top block training, from the frozen-prefix cache) on the built-in
# MODEL (resnet-small) with IMAGES (6,000) Fashion-MNIST images for EPOCHS
# (3) epochs. It prints the median images/s of the epochs after the first,
# the ratio channels_last / contiguous, and the last epoch's training loss
# of each. Inference is not measured here: bench/train/memory_format_probe.py
# shows that serving's frozen, optimize_for_inference modules gain nothing.
#
# Usage: [IMAGES=6000] [EPOCHS=3] [REPEATS=2] [STRATEGIES="full fine_tune"]
#        [KAIZEN_BIN_DIR=build] bench/train/memory_format_bench.sh
# Smoke: IMAGES=256 EPOCHS=2 REPEATS=1 KAIZEN_BIN_DIR=build bench/train/memory_format_bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${KAIZEN_BIN_DIR:-build}
BIN=$BUILD/bench/kaizen_train_bench
if [ -z "${KAIZEN_BIN_DIR:-}" ]; then bash scripts/build.sh kaizen_train_bench >/dev/null; fi
[[ -x $BIN ]] || { echo "memory_format_bench: $BIN is missing" >&2; exit 1; }
IMAGES=${IMAGES:-6000}
EPOCHS=${EPOCHS:-3}
REPEATS=${REPEATS:-2}
MODEL=${MODEL:-resnet-small}
STRATEGIES=${STRATEGIES:-full fine_tune}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
run() {  # STRATEGY FORMAT
  local flag=--nochannels_last
  [ "$2" = channels_last ] && flag=--channels_last
  "$BIN" --strategy="$1" --model="$MODEL" --trainable_blocks=1 --images="$IMAGES" \
    --epochs="$EPOCHS" --batch_size=64 --threads=2 "$flag" |
    sed "s/^{/{\"strategy\": \"$1\", \"format\": \"$2\", /" >>"$OUT"
}
for s in $STRATEGIES; do
  for r in $(seq 1 "$REPEATS"); do
    if (( r % 2 )); then run "$s" contiguous; run "$s" channels_last
    else run "$s" channels_last; run "$s" contiguous; fi
  done
done
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown) \
/usr/bin/python3 - "$OUT" "$MODEL" "$IMAGES" "$EPOCHS" "$REPEATS" <<'PYEOF'
import json, os, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
model, images, epochs, repeats = sys.argv[2:6]
print(f"memory format in training, commit {os.environ['COMMIT']}, 2 threads: {model}, "
      f"{images} images, {epochs} epochs, {repeats} run(s) each; images/s over epochs > 1")
print(f"{'strategy':<12}{'contiguous':>12}{'channels_last':>15}{'ratio':>9}{'loss (c / cl)':>22}")
for s in dict.fromkeys(r["strategy"] for r in rows):
    rate, loss = {}, {}
    for f in ("contiguous", "channels_last"):
        ep = [r for r in rows if r["strategy"] == s and r["format"] == f and "epoch" in r]
        later = [r["images_per_second"] for r in ep if r["epoch"] > 1] or \
                [r["images_per_second"] for r in ep]
        rate[f] = statistics.median(later)
        loss[f] = ep[-1]["train_loss"]
    print(f"{s:<12}{rate['contiguous']:>12.1f}{rate['channels_last']:>15.1f}"
          f"{rate['channels_last'] / rate['contiguous']:>8.3f}x"
          f"{loss['contiguous']:>11.4f} / {loss['channels_last']:.4f}")
PYEOF
