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
#   - with TRAIN=1, then the end to end path on the whole folder: a
#     FINE_TUNE job (STRATEGY `TRAIN_STRATEGY`, base `TRAIN_BASE`: the
#     built-in resnet-small at the folder's 3x224x224 by default, 1 epoch,
#     batch 32, its default validation split) that streams the record file
#     (its images far exceed --max_job_image_memory_mb), its images/s and
#     wall time, the server's RSS before it and its peak (VmHWM) after, then
#     `kaizenctl predict` on PREDICT_IMAGES images of the folder (10 per
#     class by default) with the job's model: their top-1 accuracy (training
#     images: a check that the served model is the trained one, not a test).
# Needs about 3x the folder's bytes of free disk under TMPDIR.
#
# Usage: [N=60000] [DECODE_IMAGES=6000] [TRAIN=0|1] [KAIZEN_BIN_DIR=build] bench/loader/large_folder_bench.sh
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

TRAIN=${TRAIN:-0}
TRAIN_BASE=${TRAIN_BASE:-resnet-small}
TRAIN_STRATEGY=${TRAIN_STRATEGY:-fine_tune}
if [ "$TRAIN" = 1 ]; then
  TRAIN_BEFORE_KB=$(rss_kb VmRSS)
  T0=$(date +%s.%N)
  CTL --output=json --timeout=86400s finetune start --base="$TRAIN_BASE" --dataset=large \
    --output_model=large-tuned --strategy="$TRAIN_STRATEGY" --epochs=1 --batch_size=32 \
    --augment=off --seed=1 --watch >"$WORK/watch.jsonl"
  T1=$(date +%s.%N)
  TRAIN_HWM_KB=$(rss_kb VmHWM)
  JOB_ID=$($PY -c 'import json, sys
for line in open(sys.argv[1]):
    d = json.loads(line)
    i = d.get("id") or d.get("jobId")
    if i: print(i); break' "$WORK/watch.jsonl")
  CTL --output=json jobs get "$JOB_ID" >"$WORK/job.json"
  # PREDICT_IMAGES files of the folder, as many of each class.
  per_class=$(( ${PREDICT_IMAGES:-100} / 10 ))
  PICKS=()
  for d in "$WORK"/folder/*/; do
    files=("$d"*)
    PICKS+=("${files[@]:0:$per_class}")
  done
  CTL --output=json predict large-tuned "${PICKS[@]}" --top_k=1 >"$WORK/predict.json"
  printf '%s\n' "${PICKS[@]}" >"$WORK/picks.txt"
fi

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
if [ "$TRAIN" = 1 ]; then
  T0=$T0 T1=$T1 BEFORE_KB=$TRAIN_BEFORE_KB HWM_KB=$TRAIN_HWM_KB $PY - "$WORK/job.json" \
    "$WORK/predict.json" "$WORK/picks.txt" "$WORK/watch.jsonl" <<'PYEOF'
import json, os, sys
e = os.environ
job = json.load(open(sys.argv[1]))
h = job["history"][-1]
stream = any("stream from the dataset's record file" in line
             for line in open(sys.argv[4], errors="replace"))
print(f"\nFINE_TUNE job on the whole folder ({job['request']['baseModel']}, "
      f"{job['request']['strategy']}): {job['state']}, "
      f"{float(e['T1']) - float(e['T0']):.0f} s wall, {h['samplesPerSecond']:.1f} img/s, "
      f"train loss {h['trainLoss']:.3f} acc {h['trainAccuracy']:.3f}, "
      f"val loss {h.get('valLoss', 0):.3f} acc {h.get('valAccuracy', 0):.3f}")
print(f"job's server RSS: {int(e['BEFORE_KB']) / 1024:.0f} MB before, peak {int(e['HWM_KB']) / 1024:.0f} MB (VmHWM)"
      f"{'; the images streamed' if stream else ''}")
picks = [l.strip() for l in open(sys.argv[3]) if l.strip()]
resp = json.load(open(sys.argv[2]))
preds = resp.get("predictions", [])
right = sum(1 for path, p in zip(picks, preds)
            if p.get("classes") and p["classes"][0]["label"] == os.path.basename(os.path.dirname(path)))
print(f"Predict (version {resp.get('version')}): {len(preds)} answers for {len(picks)} training images "
      f"of the folder, top-1 {right}/{len(preds)}")
PYEOF
fi
