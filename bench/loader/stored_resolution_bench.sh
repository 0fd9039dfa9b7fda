#!/usr/bin/env bash
# The stored-resolution cap (issue 17) side by side: one generated folder of N
# large JPEGs (tools/make_jpeg_folder.py at SIZE x SIZE, quality 90) uploaded
# twice to one kaizen-server on a loopback port, as uploaded and with
# `--max_stored_shorter_side=CAP`. For each it reports the upload's wall
# seconds (kaizenctl archives the folder on the fly), the stored bytes against
# the uploaded ones, the images the report says were downscaled, and the input
# pipeline on the stored file (kaizen_loader_bench --existing_record_file:
# training::RecordLoader decoding and resizing to 224x224 RGB on THREADS
# threads), then the ratios capped / as uploaded.
#
# Usage: [N=1000] [SIZE=1024] [CAP=256] [THREADS=2] [KAIZEN_BIN_DIR=build] bench/loader/stored_resolution_bench.sh
# Smoke: N=30 SIZE=512 KAIZEN_BIN_DIR=build bench/loader/stored_resolution_bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/common.sh
N=${N:-1000}
SIZE=${SIZE:-1024}
CAP=${CAP:-256}
THREADS=${THREADS:-2}
PY=/usr/bin/python3
bench_binaries stored_resolution_bench
[[ -x $BUILD/bench/kaizen_loader_bench ]] || { echo "stored_resolution_bench: $BUILD/bench/kaizen_loader_bench is missing" >&2; exit 1; }
bench_server

$PY tools/make_jpeg_folder.py /usr/share/datasets/fashion-mnist "$WORK/folder" "$N" \
  --size "$SIZE" --quality 90 >&2
: >"$WORK/runs.jsonl"
for cap in 0 "$CAP"; do
  name="cap-$cap"
  start=$(date +%s.%N)
  CTL --output=json --timeout=3600s datasets upload "$name" "$WORK/folder" \
    --max_stored_shorter_side="$cap" >"$WORK/$name.json"
  end=$(date +%s.%N)
  decode=$("$BUILD/bench/kaizen_loader_bench" --existing_record_file="$(ls "$WORK"/data/datasets/"$name"-*.krf)" \
    --size=224 --epochs=1 --threads="$THREADS")
  $PY -c 'import json, sys
d = json.load(open(sys.argv[1])); r = json.loads(sys.argv[2].splitlines()[-1])
print(json.dumps({"cap": int(sys.argv[3]), "seconds": float(sys.argv[5]) - float(sys.argv[4]),
                  "uploaded": int(d["uploadBytes"]), "stored": int(d["storedBytes"]),
                  "downscaled": int(d["report"].get("downscaledImages", 0)),
                  "shape": d["inputShape"], "decode": r["images_per_s"]}))' \
    "$WORK/$name.json" "$decode" "$cap" "$start" "$end" >>"$WORK/runs.jsonl"
done

COMMIT=$(bench_commit) THREADS=$THREADS $PY - "$WORK/runs.jsonl" <<'PYEOF'
import json, os, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
full, capped = runs
print(f"\nStored-resolution cap, commit {os.environ['COMMIT']}, {os.cpu_count()} cores: "
      f"{full['downscaled'] or capped['downscaled']} of them downscaled")
print(f"{'stored as':<22} {'upload s':>8} {'uploaded MB':>11} {'stored MB':>9} {'stored/up':>9} "
      f"{'downscaled':>10} {'shape':>12} {'decode img/s':>12}")
for r, what in ((full, "uploaded"), (capped, f"shorter side <= {capped['cap']}")):
    shape = "x".join(str(x) for x in r["shape"])
    print(f"{what:<22} {r['seconds']:>8.1f} {r['uploaded'] / 1e6:>11.1f} {r['stored'] / 1e6:>9.1f} "
          f"{r['stored'] / r['uploaded']:>9.3f} {r['downscaled']:>10} {shape:>12} {r['decode']:>12.1f}")
print(f"capped / uploaded: stored bytes {capped['stored'] / full['stored']:.3f}x, "
      f"upload time {capped['seconds'] / full['seconds']:.2f}x, "
      f"decode rate ({os.environ['THREADS']} threads, to 224x224) {capped['decode'] / full['decode']:.2f}x")
PYEOF
