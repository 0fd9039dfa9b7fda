#!/usr/bin/env bash
# A dataset larger than memory through the real server (issue 17): a generated
# folder of N JPEGs (tools/make_jpeg_folder.py: Fashion-MNIST upscaled to
# 224x224 RGB, tinted, with grain, quality 98; about 53 KB each, so the default
# 60,000 are about 3.2 GB) uploaded with `kaizenctl datasets upload` to a
# kaizen-server on a loopback port. It reports
#   - upload MB/s (bytes sent / wall seconds of the kaizenctl process, which
#     archives the folder on the fly) and the server's ingest seconds;
#   - stored bytes / uploaded bytes (the record file against the tar stream);
#   - the server's RSS before, at most during (sampled every 0.2 s) and its
#     peak (VmHWM) after the upload;
#   - then the input pipeline on the stored record file: kaizen_loader_bench
#     --existing_record_file (training::RecordLoader, decode + resize to
#     224x224 RGB) at 1 and 2 threads against PIL (bench/loader/pil_decode.py)
#     at 1 and 2 processes on the same DECODE_IMAGES images, side by side, as
#     ratios.
# Needs about 3x the folder's bytes of free disk under TMPDIR.
#
# Usage: [N=60000] [DECODE_IMAGES=6000] [KAIZEN_BIN_DIR=build] bench/loader/large_folder_bench.sh
# Smoke: N=300 DECODE_IMAGES=100 KAIZEN_BIN_DIR=build bench/loader/large_folder_bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/common.sh
N=${N:-60000}
DECODE_IMAGES=${DECODE_IMAGES:-6000}
PY=/usr/bin/python3
FASHION=/usr/share/datasets/fashion-mnist
bench_binaries large_folder_bench
[[ -x $BUILD/bench/kaizen_loader_bench ]] || { echo "large_folder_bench: $BUILD/bench/kaizen_loader_bench is missing" >&2; exit 1; }
bench_server
SAMPLER=""
trap '[ -n "$SAMPLER" ] && kill $SAMPLER 2>/dev/null; kill $SERVER_PID 2>/dev/null; wait $SERVER_PID 2>/dev/null; rm -rf "$WORK"' EXIT

$PY tools/make_jpeg_folder.py "$FASHION" "$WORK/folder" "$N" >&2
FOLDER_BYTES=$(du -sb "$WORK/folder" | cut -f1)

rss_kb() { sed -n "s/^$1:[[:space:]]*\([0-9]*\) kB/\1/p" "/proc/$SERVER_PID/status"; }
BEFORE_KB=$(rss_kb VmRSS)
# The largest VmRSS seen while the upload runs.
( max=0; while kill -0 "$SERVER_PID" 2>/dev/null; do
    v=$(rss_kb VmRSS || echo 0); (( v > max )) && { max=$v; echo "$max" >"$WORK/rss_max"; }
    sleep 0.2
  done ) &
SAMPLER=$!

START=$(date +%s.%N)
CTL --output=json --timeout=3600s datasets upload large "$WORK/folder" >"$WORK/dataset.json"
END=$(date +%s.%N)
sleep 0.5
kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=""
HWM_KB=$(rss_kb VmHWM)
RECORD_FILE=$(ls "$WORK"/data/datasets/large-*.krf)

{
  "$BUILD/bench/kaizen_loader_bench" --existing_record_file="$RECORD_FILE" --size=224 --epochs=1 \
    --threads=1,2 --max_images="$DECODE_IMAGES"
  $PY bench/loader/pil_decode.py "$WORK/folder" --size 224 --epochs 1 --processes 1,2 \
    --max_images "$DECODE_IMAGES"
} >"$WORK/decode.jsonl"

START=$START END=$END BEFORE_KB=$BEFORE_KB HWM_KB=$HWM_KB MAX_KB=$(cat "$WORK/rss_max" 2>/dev/null || echo 0) \
FOLDER_BYTES=$FOLDER_BYTES COMMIT=$(bench_commit) \
$PY - "$WORK/dataset.json" "$WORK/decode.jsonl" "$WORK/server.log" <<'PYEOF'
import json, os, sys
e = os.environ
ds = json.load(open(sys.argv[1]))
rows = [json.loads(l) for l in open(sys.argv[2])]
ingest = None
for line in open(sys.argv[3], errors="replace"):
    if line.startswith("{") and '"dataset stored"' in line:
        ingest = json.loads(line).get("ingest_seconds")
wall = float(e["END"]) - float(e["START"])
up, stored = int(ds["uploadBytes"]), int(ds["storedBytes"])
mb = lambda kb: int(kb) / 1024
print(f"\nLarge folder benchmark, commit {e['COMMIT']}, {os.cpu_count()} cores")
print(f"folder: {int(ds['numExamples']):,} JPEGs, {int(e['FOLDER_BYTES']) / 1e9:.2f} GB of files; "
      f"uploaded {up / 1e9:.2f} GB (tar stream)")
print(f"upload: {wall:.1f} s wall, {up / wall / 1e6:.1f} MB/s, server ingest {ingest:.1f} s "
      f"after the last byte" if ingest is not None else f"upload: {wall:.1f} s wall")
print(f"stored: {stored / 1e9:.3f} GB = {stored / up:.3f}x the uploaded bytes")
print(f"server RSS: {mb(e['BEFORE_KB']):.0f} MB before, at most {mb(e['MAX_KB']):.0f} MB during "
      f"(sampled), peak {mb(e['HWM_KB']):.0f} MB (VmHWM)")
k = {r["threads"]: r for r in rows if r["what"] == "kaizen"}
p = {r["processes"]: r for r in rows if r["what"] == "pil"}
print(f"\ndecode + resize to 224x224 RGB, {next(iter(k.values()))['images']} images")
print(f"{'count':>5} {'Kaizen img/s':>13} {'PIL img/s':>10} {'ratio':>6}")
for n in sorted(k):
    ratio = k[n]["images_per_s"] / p[n]["images_per_s"] if n in p else float("nan")
    print(f"{n:>5} {k[n]['images_per_s']:>13.1f} {p[n]['images_per_s'] if n in p else '-':>10} "
          f"{ratio:>6.2f}")
PYEOF
