#!/usr/bin/env bash
# Model instances (issue 18, item 1), side by side in one kaizen-server: the
# same trained checkpoint uploaded under one name per CONFIG, each name given
# its own executor instances and intra-op threads in a --serving_config
# ("AxB" = A instances of B threads each; "AxBbN" also caps its batches at
# N, maxBatchSize, instead of the server's --max_batch_size). `kaizenctl
# bench predict` drives each name in turn, R rounds per concurrency (the
# order rotates every round), D measured seconds after WARMUP. It prints medians over rounds
# (req/s, p50, p99) and the medians of per-round ratios against the first
# CONFIG, and appends every run as one JSON line to $INSTANCES_RESULTS.
#
# Usage: [CONFIGS="1x2 2x1"] [CONCURRENCY="1 2 4 8 32"] [R=3] [D=8] [WARMUP=2]
#        [BASE_ARCH=resnet-small] [TRAIN_IMAGES=500] [KAIZEN_BIN_DIR=DIR]
#        bench/predict/instances_bench.sh
# Smoke: CONCURRENCY="1 4" R=1 D=1 WARMUP=0 TRAIN_IMAGES=100 BASE_ARCH=cnn-small
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/common.sh
CONFIGS=(${CONFIGS:-1x2 2x1})
CONCURRENCY="${CONCURRENCY:-1 2 4 8 32}"
R="${R:-3}"
D="${D:-8}"
WARMUP="${WARMUP:-2}"
BASE_ARCH="${BASE_ARCH:-resnet-small}"
TRAIN_IMAGES="${TRAIN_IMAGES:-500}"
RESULTS="${INSTANCES_RESULTS:-bench/runs/history/instances_results.jsonl}"
PY=/usr/bin/python3
# libgomp spins by default, which on a shared machine makes idle threads
# steal cores from busy ones (bench/README.md, "Threads").
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
bench_binaries instances_bench

CONFIG_FILE=$(mktemp "${TMPDIR:-/tmp}/instances-config.XXXXXX.json")
$PY - "$CONFIG_FILE" "${CONFIGS[@]}" <<'PYEOF'
import json, re, sys
models = {}
for c in sys.argv[2:]:
    m = re.fullmatch(r"(\d+)x(\d+)(?:b(\d+))?", c)
    if not m:
        sys.exit(f"instances_bench: CONFIGS entry {c!r} is not INSTANCESxTHREADS[bMAXBATCH]")
    models[f"inst-{c}"] = {"instances": int(m[1]), "threadsPerInstance": int(m[2])}
    if m[3]:
        models[f"inst-{c}"]["maxBatchSize"] = int(m[3])
json.dump({"models": models}, open(sys.argv[1], "w"))
PYEOF
BENCH_SERVER_FLAGS="--serving_config=$CONFIG_FILE"
bench_server
trap 'kill $SERVER_PID 2>/dev/null; wait $SERVER_PID 2>/dev/null; rm -rf "$WORK" "$CONFIG_FILE"' EXIT

$PY - "$WORK" "$TRAIN_IMAGES" <<'PYEOF'
import sys
sys.path.insert(0, "tools")
from make_fashion_subsets import load, write
images, labels = load("/usr/share/datasets/fashion-mnist", "train")
write(sys.argv[1], "train", images, labels, list(range(10)), int(sys.argv[2]) // 10)
PYEOF
CTL datasets upload fm-inst "$WORK/train-images" --format=idx --labels="$WORK/train-labels" >/dev/null
CTL finetune start --base="$BASE_ARCH" --dataset=fm-inst --output_model=inst-trained \
  --strategy=scratch --epochs=1 --seed=1 --watch >"$WORK/finetune.log" 2>&1 ||
  { cat "$WORK/finetune.log" >&2; exit 1; }
CTL models download inst-trained "$WORK/model.pt" >/dev/null
for c in "${CONFIGS[@]}"; do CTL models upload "inst-$c" "$WORK/model.pt" >/dev/null; done

RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)-$$
COMMIT=$(bench_commit)
mkdir -p "$(dirname "$RESULTS")"
RUN_LINES="$WORK/run.jsonl"
: >"$RUN_LINES"
n=${#CONFIGS[@]}
echo "instances_bench: $BASE_ARCH, configs ${CONFIGS[*]} (instances x threads), concurrency" \
  "$CONCURRENCY, $R round(s) of ${D}s (+${WARMUP}s warm-up), $(nproc) cores" >&2
for conc in $CONCURRENCY; do
  for round in $(seq 1 "$R"); do
    for i in $(seq 0 $((n - 1))); do
      config=${CONFIGS[$(( (i + round - 1) % n ))]}
      out=$(CTL --output=json bench predict "inst-$config" --concurrency="$conc" --duration="$D" \
        --warmup="$WARMUP" 2>"$WORK/err") || { cat "$WORK/err" >&2; exit 1; }
      line=$($PY -c 'import json, sys, os
r = json.loads(sys.argv[5])
print(json.dumps({"run_id": sys.argv[1], "commit": sys.argv[2], "arch": sys.argv[6],
                  "nproc": len(os.sched_getaffinity(0)), "config": sys.argv[3],
                  "concurrency": int(sys.argv[4]), "round": int(sys.argv[7]), "result": r}))' \
        "$RUN_ID" "$COMMIT" "$config" "$conc" "$out" "$BASE_ARCH" "$round")
      echo "$line" >>"$RUN_LINES"
      echo "$line" >>"$RESULTS"
      $PY -c 'import json, sys
d = json.loads(sys.argv[1]); r = d["result"]; l = r["latency_ms"]
print("  c=%-4d round %d  %-6s %8.1f req/s  p50 %7.2f ms  p99 %7.2f ms  failed %d" % (
    d["concurrency"], d["round"], d["config"], r["requests_per_second"], l["p50"], l["p99"],
    r.get("failed_requests", 0)))' "$line" >&2
    done
  done
done

$PY - "$RUN_LINES" <<'PYEOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
configs = list(dict.fromkeys(r["config"] for r in rows))
conc = sorted({r["concurrency"] for r in rows})
med = statistics.median
def val(cfg, c, key):
    out = {}
    for r in rows:
        if r["config"] == cfg and r["concurrency"] == c:
            res = r["result"]
            out[r["round"]] = res["requests_per_second"] if key == "rps" else res["latency_ms"][key]
    return out
print(f"\nModel instances, {rows[0]['arch']}, run {rows[0]['run_id']} (commit {rows[0]['commit']}, "
      f"{rows[0]['nproc']} cores); medians over {max(r['round'] for r in rows)} round(s)\n")
print(f"{'config':<8}{'conc':>6}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'failed':>8}")
for c in conc:
    for cfg in configs:
        failed = sum(r["result"].get("failed_requests", 0) for r in rows
                     if r["config"] == cfg and r["concurrency"] == c)
        print(f"{cfg:<8}{c:>6}{med(val(cfg, c, 'rps').values()):>10.1f}"
              f"{med(val(cfg, c, 'p50').values()):>10.2f}{med(val(cfg, c, 'p99').values()):>10.2f}"
              f"{failed:>8}")
base = configs[0]
print(f"\nmedian of per-round ratios against {base} (req/s higher is better; p50, p99 lower)\n")
print(f"{'config':<8}{'conc':>6}{'req/s':>10}{'p50':>10}{'p99':>10}")
for c in conc:
    for cfg in configs[1:]:
        def ratio(key):
            x, y = val(cfg, c, key), val(base, c, key)
            return med([x[k] / y[k] for k in x if k in y and y[k] > 0])
        print(f"{cfg:<8}{c:>6}{ratio('rps'):>10.2f}{ratio('p50'):>10.2f}{ratio('p99'):>10.2f}")
if any(r["result"].get("failed_requests", 0) for r in rows):
    sys.exit("instances_bench: some requests failed")
PYEOF
echo "raw results appended to $RESULTS (run_id $RUN_ID)" >&2
