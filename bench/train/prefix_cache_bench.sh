#!/usr/bin/env bash
# The FINE_TUNE frozen-prefix cache (issue 18, item 4) side by side: the same
# kaizen_train_bench job (FINE_TUNE of the built-in MODEL, resnet-small, with
# the top TRAINABLE_BLOCKS (1) training, no augmentation, IMAGES (6,000)
# Fashion-MNIST images, EPOCHS (3) epochs, batch 64, 2 threads) with the cache
# off (--max_prefix_cache_mb=0: the whole model at every step) and on (the
# default budget), interleaved for REPEATS (3) rounds, alternating which goes
# first. It prints the median wall seconds of the first epoch (which builds
# the cache) and of the later ones, the whole run's, the ratios off / on, and
# the largest difference between the two runs' per-epoch training losses.
#
# Usage: [IMAGES=6000] [EPOCHS=3] [REPEATS=3] [KAIZEN_BIN_DIR=build] bench/train/prefix_cache_bench.sh
# Smoke: IMAGES=256 EPOCHS=2 REPEATS=1 KAIZEN_BIN_DIR=build bench/train/prefix_cache_bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${KAIZEN_BIN_DIR:-build}
BIN=$BUILD/bench/kaizen_train_bench
if [ -z "${KAIZEN_BIN_DIR:-}" ]; then bash scripts/build.sh kaizen_train_bench >/dev/null; fi
[[ -x $BIN ]] || { echo "prefix_cache_bench: $BIN is missing" >&2; exit 1; }
IMAGES=${IMAGES:-6000}
EPOCHS=${EPOCHS:-3}
REPEATS=${REPEATS:-3}
MODEL=${MODEL:-resnet-small}
TRAINABLE_BLOCKS=${TRAINABLE_BLOCKS:-1}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
run() {  # run LABEL BUDGET_MB
  "$BIN" --strategy=fine_tune --model="$MODEL" --trainable_blocks="$TRAINABLE_BLOCKS" \
    --images="$IMAGES" --epochs="$EPOCHS" --batch_size=64 --threads=2 \
    --max_prefix_cache_mb="$2" | sed "s/^{/{\"label\": \"$1\", /" >>"$OUT"
}
for r in $(seq 1 "$REPEATS"); do
  if (( r % 2 )); then run off 0; run on 1024; else run on 1024; run off 0; fi
done
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown) \
/usr/bin/python3 - "$OUT" "$MODEL" "$IMAGES" "$EPOCHS" "$TRAINABLE_BLOCKS" <<'PYEOF'
import json, os, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
model, images, epochs, blocks = sys.argv[2:6]
def side(label):
    epochs_ = [r for r in rows if r.get("label") == label and "epoch" in r and r.get("side") == "cpp"]
    done = [r for r in rows if r.get("label") == label and r.get("event") == "done"]
    first = [r["wall_seconds"] for r in epochs_ if r["epoch"] == 1]
    later = [r["wall_seconds"] for r in epochs_ if r["epoch"] > 1]
    losses = {}
    for r in epochs_:
        losses.setdefault(r["epoch"], []).append(r["train_loss"])
    return {"first": statistics.median(first), "later": statistics.median(later) if later else float("nan"),
            "total": statistics.median(r["total_seconds"] for r in done), "losses": losses,
            "runs": len(done)}
off, on = side("off"), side("on")
diff = max(abs(a - b) for e in off["losses"] for a, b in zip(off["losses"][e], on["losses"].get(e, [])))
print(f"\nFINE_TUNE frozen-prefix cache, commit {os.environ['COMMIT']}, {os.cpu_count()} cores: {model}, "
      f"top {blocks} block(s) training, {images} images, {epochs} epochs, {off['runs']} runs each")
print(f"{'cache':<6} {'epoch 1 s':>10} {'later epochs s':>15} {'run s':>8}")
for label, s in (("off", off), ("on", on)):
    print(f"{label:<6} {s['first']:>10.2f} {s['later']:>15.2f} {s['total']:>8.2f}")
print(f"off / on: epoch 1 {off['first'] / on['first']:.2f}x, later epochs "
      f"{off['later'] / on['later']:.2f}x, whole run {off['total'] / on['total']:.2f}x")
print(f"largest difference between the runs' epoch training losses: {diff:.2e}")
PYEOF
