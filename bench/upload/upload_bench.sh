#!/usr/bin/env bash
# Dataset upload throughput through the real server, one command: MB/s of
# `kaizenctl datasets upload` for
#   idx     the Fashion-MNIST IDX training pair (train-images-idx3-ubyte.gz and
#           the labels file kaizenctl finds beside it, ~26 MB gzip);
#   folder  a folder of N PNGs from Fashion-MNIST in class folders
#           (tools/make_image_folder.py), archived on the fly by kaizenctl
#           (an uncompressed tar; the time counts the archiving);
#   targz   a tar.gz of the same folder, made once beforehand.
# It starts kaizen-server on a temporary data dir and a free loopback port,
# then runs R rounds of the three uploads, interleaved (the order rotates every
# round); every upload gets a fresh dataset name and is deleted afterwards.
# Each upload is timed around the kaizenctl process with a monotonic clock:
# MB/s = bytes sent (the dataset's upload_bytes, 1 MB = 10^6 bytes) / wall
# seconds. From the server's log it also takes the RPC's duration ("request",
# method UploadDataset, "ms") and the ingest time after the last byte arrived
# ("dataset stored", "ingest_seconds": what is left after the last byte of
# decoding and validating (an IDX pair decodes while it arrives), writing the
# record file, the catalogue row); ingest share = ingest seconds / client wall
# seconds. It prints
# medians over rounds and appends one JSON line per upload to $UPLOAD_RESULTS.
# Then, when the build has it, bench/kaizen_ingest_stages_bench times each
# stage of the IDX ingest alone (SHA-256, gunzip by zlib and by ISA-L, the
# CRCs, decode + report, the store, and both overlapped) over R rounds.
#
# Usage: bench/upload/upload_bench.sh
# Settings (environment):
#   R=5                 rounds            N=10000   PNGs in the folder (at most
#                                                   10,000: the t10k set, N/10 a class)
#   KINDS="idx folder targz"                        which uploads to run
#   THREADS=$(nproc)    kaizen-server --threads
#   KAIZEN_SERVER_FLAGS="..."   extra kaizen-server flags
#   UPLOAD_RESULTS=bench/runs/history/upload_results.jsonl   ("" = append nothing)
#   KAIZEN_BIN_DIR=DIR  prebuilt kaizen-server and kaizenctl; otherwise
#                       scripts/build.sh builds them in ${KAIZEN_BUILD_DIR:-build}
#   OMP_WAIT_POLICY     exported to the server; default PASSIVE (bench/README.md)
# Quick look: KAIZEN_BIN_DIR=build R=1 N=200 UPLOAD_RESULTS= bench/upload/upload_bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/common.sh
R="${R:-5}"
N="${N:-10000}"
KINDS="${KINDS:-idx folder targz}"
THREADS="${THREADS:-$(nproc)}"
KAIZEN_SERVER_FLAGS="${KAIZEN_SERVER_FLAGS:-}"
RESULTS="${UPLOAD_RESULTS-bench/runs/history/upload_results.jsonl}"
PY=/usr/bin/python3
FASHION=/usr/share/datasets/fashion-mnist
CLASSES=t-shirt,trouser,pullover,dress,coat,sandal,shirt,sneaker,bag,ankle-boot
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

bench_binaries upload_bench
[ -f "$FASHION/train-images-idx3-ubyte.gz" ] || { echo "upload_bench: $FASHION is missing" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/upload-bench.XXXXXX")
SERVER_PID=""
cleanup() {
  local rc=$?
  [ -n "$SERVER_PID" ] && { kill -TERM "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; }
  if [ $rc -ne 0 ] && [ -f "$WORK/server.log" ]; then
    echo "--- last lines of server.log ---" >&2; tail -n 20 "$WORK/server.log" >&2
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# shellcheck disable=SC2086
"$BUILD/kaizen-server" --data_dir="$WORK/data" --host=127.0.0.1 --grpc_port="$PORT" \
  --metrics_port=-1 --threads="$THREADS" $KAIZEN_SERVER_FLAGS >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
CTL() { "$BUILD/kaizenctl" --server="127.0.0.1:$PORT" "$@"; }
for i in $(seq 1 300); do
  CTL --timeout=5s datasets list >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "upload_bench: kaizen-server exited" >&2; exit 1; }
  [ "$i" = 300 ] && { echo "upload_bench: kaizen-server did not answer within 60 s" >&2; exit 1; }
  sleep 0.2
done

# The image folder and its tar.gz (made once, not timed).
PER_CLASS=$(( N / 10 ))
(( PER_CLASS >= 1 && PER_CLASS <= 1000 )) || { echo "upload_bench: N must be 10..10000" >&2; exit 2; }
$PY tools/make_image_folder.py "$FASHION" "$WORK/fashion-png" "$PER_CLASS" >&2
(cd "$WORK/fashion-png" && tar -czf "$WORK/fashion-png.tar.gz" -- *)
echo "folder: $(find "$WORK/fashion-png" -type f | wc -l) PNGs, $(du -sb "$WORK/fashion-png" | cut -f1) bytes of files; tar.gz $(stat -c %s "$WORK/fashion-png.tar.gz") bytes" >&2

RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)-$$
COMMIT=$(bench_commit)
CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
RUN_LINES="$WORK/run.jsonl"
: >"$RUN_LINES"
export RUN_ID COMMIT CPU_MODEL THREADS N KAIZEN_SERVER_FLAGS

# upload_one KIND ROUND: one timed upload, one JSON line, then delete it.
upload_one() {
  local kind=$1 round=$2 rc=0 name="ub-$1-r$2-$RANDOM"
  local args
  case $kind in
    idx) args=("$FASHION/train-images-idx3-ubyte.gz" --class_names="$CLASSES") ;;
    folder) args=("$WORK/fashion-png") ;;
    targz) args=("$WORK/fashion-png.tar.gz") ;;
    *) echo "upload_bench: unknown kind $kind" >&2; exit 2 ;;
  esac
  # Monotonic clock around the kaizenctl process only.
  local wall
  wall=$($PY -c '
import subprocess, sys, time
out = open(sys.argv[1], "w"); err = open(sys.argv[2], "w")
t = time.monotonic()
rc = subprocess.call(sys.argv[3:], stdout=out, stderr=err)
print("%.6f %d" % (time.monotonic() - t, rc))' "$WORK/out.json" "$WORK/err" \
    "$BUILD/kaizenctl" --server="127.0.0.1:$PORT" --output=json datasets upload "$name" "${args[@]}")
  rc=${wall#* }
  wall=${wall% *}
  KIND=$kind ROUND=$round NAME=$name WALL=$wall RC=$rc DATE=$(date -u +%FT%TZ) \
    $PY - "$WORK/out.json" "$WORK/err" "$WORK/server.log" <<'PYEOF' >>"$RUN_LINES"
import json, os, sys
e = os.environ
name, wall, rc = e["NAME"], float(e["WALL"]), int(e["RC"])
try:
    ds = json.load(open(sys.argv[1]))
except Exception:
    ds = {}
rpc_ms = ingest = None
for line in open(sys.argv[3], errors="replace"):
    if name not in line or not line.startswith("{"):
        continue
    try:
        d = json.loads(line)
    except ValueError:
        continue
    if d.get("msg") == "request" and d.get("method") == "UploadDataset" and d.get("resource") == name:
        rpc_ms = d.get("ms")
    elif d.get("msg") == "dataset stored" and d.get("dataset") == name:
        ingest = d.get("ingest_seconds")
nbytes = int(ds.get("uploadBytes", 0))
print(json.dumps({
    "run_id": e["RUN_ID"], "date": e["DATE"], "commit": e["COMMIT"],
    "nproc": len(os.sched_getaffinity(0)), "cpu_model": e["CPU_MODEL"],
    "loadavg": round(os.getloadavg()[0], 2), "server_threads": int(e["THREADS"]),
    "kaizen_server_flags": e["KAIZEN_SERVER_FLAGS"], "omp_wait_policy": e["OMP_WAIT_POLICY"],
    "kind": e["KIND"], "round": int(e["ROUND"]), "dataset": name, "rc": rc,
    "error": open(sys.argv[2], errors="replace").read().strip()[-500:] if rc else "",
    "folder_images": int(e["N"]) if e["KIND"] != "idx" else None,
    "bytes": nbytes, "examples": int(ds.get("numExamples", 0)),
    "wall_seconds": round(wall, 6),
    "mb_per_second": round(nbytes / wall / 1e6, 3) if nbytes and wall > 0 else None,
    "images_per_second": round(int(ds.get("numExamples", 0)) / wall, 1) if wall > 0 else None,
    "server_rpc_seconds": round(rpc_ms / 1000, 6) if rpc_ms is not None else None,
    "ingest_seconds": ingest,
    "ingest_share": round(ingest / wall, 4) if ingest is not None and wall > 0 else None,
}))
PYEOF
  [ -z "$RESULTS" ] || { mkdir -p "$(dirname "$RESULTS")"; tail -n 1 "$RUN_LINES" >>"$RESULTS"; }
  $PY -c '
import json, sys
d = json.loads(sys.argv[1])
f = lambda v, fmt: fmt % v if v is not None else "-"
print("  round %d  %-7s %11s bytes  %8s s  %8s MB/s  ingest %7s s (%s)%s" % (
    d["round"], d["kind"], "{:,}".format(d["bytes"]), f(d["wall_seconds"], "%.3f"), f(d["mb_per_second"], "%.2f"),
    f(d["ingest_seconds"], "%.3f"), f(d["ingest_share"] and 100 * d["ingest_share"], "%.0f%%"),
    "" if d["rc"] == 0 else "  (exit %d: %s)" % (d["rc"], d["error"][-200:])))' "$(tail -n 1 "$RUN_LINES")" >&2
  [ "$rc" = 0 ] && CTL datasets delete "$name" >/dev/null
  return 0
}

read -r -a KIND_LIST <<<"$KINDS"
K=${#KIND_LIST[@]}
echo "benchmark: $R round(s) of: $KINDS; folder of $N PNGs; server $THREADS threads" >&2
for round in $(seq 1 "$R"); do
  for i in $(seq 0 $((K - 1))); do
    upload_one "${KIND_LIST[$(( (i + round - 1) % K ))]}" "$round"
  done
done

$PY - "$RUN_LINES" <<'PYEOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
first = rows[0]
med = lambda xs: statistics.median(xs) if xs else float("nan")
print(f"\nUpload benchmark {first['run_id']}: commit {first['commit']}")
print(f"machine: {first['nproc']} x {first['cpu_model']}; server {first['server_threads']} threads; "
      f"OMP_WAIT_POLICY={first['omp_wait_policy']}; load {first['loadavg']} (first) "
      f"{rows[-1]['loadavg']} (last)")
names = {"idx": "IDX pair (.gz)", "folder": "image folder (tar on the fly)",
         "targz": "image folder (.tar.gz)"}
print(f"\nmedians over {max(r['round'] for r in rows)} round(s); MB = 10^6 bytes\n")
print(f"{'upload':<32}{'MB':>9}{'images':>8}{'wall s':>9}{'MB/s':>9}{'images/s':>10}"
      f"{'rpc s':>8}{'ingest s':>10}{'ingest':>8}{'fails':>7}")
for kind in ["idx", "folder", "targz"]:
    ok = [r for r in rows if r["kind"] == kind and r["rc"] == 0 and r["mb_per_second"]]
    fails = sum(1 for r in rows if r["kind"] == kind and r["rc"] != 0)
    if not ok and not fails:
        continue
    g = lambda k: med([r[k] for r in ok if r[k] is not None])
    print(f"{names[kind]:<32}{g('bytes') / 1e6:>9.2f}{g('examples'):>8.0f}{g('wall_seconds'):>9.3f}"
          f"{g('mb_per_second'):>9.2f}{g('images_per_second'):>10.0f}{g('server_rpc_seconds'):>8.3f}"
          f"{g('ingest_seconds'):>10.3f}{100 * g('ingest_share'):>7.0f}%{fails:>7}")
print("\nwall: the kaizenctl process (connect, archive for the folder, stream, server ingest, reply);"
      "\nrpc: the server's UploadDataset duration; ingest: what remains of decode + store after the last byte.")
PYEOF
[ -z "$RESULTS" ] || echo "raw results appended to $RESULTS (run_id $RUN_ID)" >&2

# Where the IDX ingest's time goes, stage by stage, in one process on the same
# files (bench/upload/ingest_stages_bench.cc): zlib beside ISA-L, the store.
STAGES_BENCH="$BUILD/bench/kaizen_ingest_stages_bench"
if [[ " $KINDS " == *" idx "* && -x $STAGES_BENCH ]]; then
  echo
  "$STAGES_BENCH" --images="$FASHION/train-images-idx3-ubyte.gz" \
    --labels="$FASHION/train-labels-idx1-ubyte.gz" --rounds="$R" --out_dir="$WORK"
fi
