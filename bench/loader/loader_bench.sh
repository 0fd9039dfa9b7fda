#!/usr/bin/env bash
# The streaming input pipeline against PIL on the same image folder (issue 17):
# a generated folder of Fashion-MNIST images upscaled to 224x224 RGB, tinted
# per image and saved as JPEG (quality 90), IMAGES_PER_CLASS of each of the 10
# classes; kaizen_loader_bench stores them as a record file of the JPEGs as
# they are (its size against the files' is the store ratio), then decodes and
# converts every record to 224x224 RGB with 1 and 2 loader threads
# (training::RecordLoader); bench/loader/pil_decode.py does the same with PIL
# in 1 and 2 processes. Prints images/s for each and the ratio Kaizen / PIL at
# the same count. Side by side in one run; the machine is shared, so compare
# the ratios.
#
# Usage: [IMAGES_PER_CLASS=200] [EPOCHS=2] [COUNTS="1,2"] [SIZE=224]
#        [KAIZEN_BIN_DIR=build] bench/loader/loader_bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
IMAGES_PER_CLASS=${IMAGES_PER_CLASS:-200}
EPOCHS=${EPOCHS:-2}
COUNTS=${COUNTS:-1,2}
SIZE=${SIZE:-224}
PY=/usr/bin/python3
BUILD=${KAIZEN_BIN_DIR:-${KAIZEN_BUILD_DIR:-build}}
if [[ -z ${KAIZEN_BIN_DIR:-} ]]; then bash scripts/build.sh kaizen_loader_bench >/dev/null; fi
[[ -x $BUILD/bench/kaizen_loader_bench ]] || { echo "loader_bench: $BUILD/bench/kaizen_loader_bench is missing" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

$PY - "$WORK/folder" "$IMAGES_PER_CLASS" "$SIZE" <<'PYEOF'
import os, random, sys
sys.path.insert(0, "tools")
from make_fashion_subsets import load
from PIL import Image
out, per_class, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
images, labels = load("/usr/share/datasets/fashion-mnist", "train")
rng = random.Random(1)
taken = {}
for i, label in enumerate(labels):
    if taken.get(label, 0) >= per_class:
        continue
    taken[label] = taken.get(label, 0) + 1
    grey = Image.frombytes("L", (28, 28), images[i * 784:(i + 1) * 784]).resize((size, size), Image.BILINEAR)
    tint = [rng.uniform(0.6, 1.0) for _ in range(3)]
    rgb = Image.merge("RGB", [grey.point(lambda v, t=t: int(v * t)) for t in tint])
    os.makedirs(f"{out}/class{label}", exist_ok=True)
    rgb.save(f"{out}/class{label}/{i:05d}.jpg", quality=90)
    if len(taken) == 10 and all(v >= per_class for v in taken.values()):
        break
PYEOF
echo "folder: $(find "$WORK/folder" -type f | wc -l) JPEGs, $(du -sb "$WORK/folder" | cut -f1) bytes" >&2

{
  "$BUILD/bench/kaizen_loader_bench" --folder="$WORK/folder" --record_file="$WORK/data.krf" \
    --size="$SIZE" --epochs="$EPOCHS" --threads="$COUNTS"
  $PY bench/loader/pil_decode.py "$WORK/folder" --size "$SIZE" --epochs "$EPOCHS" --processes "$COUNTS"
} | tee "$WORK/results.jsonl"

$PY - "$WORK/results.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
store = next(r for r in rows if r["what"] == "store")
print(f"\nstore: {store['images']} JPEGs, {store['image_bytes']} bytes -> record file "
      f"{store['record_file_bytes']} bytes ({store['ratio']:.3f}x)")
kaizen = {r["threads"]: r for r in rows if r["what"] == "kaizen"}
pil = {r["processes"]: r for r in rows if r["what"] == "pil"}
print(f"{'count':>5} {'Kaizen img/s':>13} {'PIL img/s':>10} {'ratio':>6} {'Kaizen peak RSS MB':>19}")
for n in sorted(kaizen):
    k, p = kaizen[n], pil.get(n)
    ratio = f"{k['images_per_s'] / p['images_per_s']:.2f}" if p else "-"
    print(f"{n:>5} {k['images_per_s']:>13.1f} {p['images_per_s'] if p else '-':>10} {ratio:>6} "
          f"{k['peak_rss_mb']:>19.1f}")
PYEOF
