#!/usr/bin/env bash
# End-to-end walk of kaizenctl against a real kaizen-server process on a
# loopback port with a temporary data directory: dataset uploads (IDX with
# the labels found automatically, an image folder archived on the fly), the
# errors users hit most, a TorchScript model upload and download, a
# kill -9 restart that must lose nothing, a short fine-tuning job (start
# --watch, jobs get/list/watch/cancel/pause/resume, the model version it
# writes, a paused job across a graceful restart), and
# predictions from that job's model: `predict` (table, JSON, top_k, pinned
# versions and policies, the errors), `bench predict`, and the Python
# serving baseline tools/predict_server_py.py answering like the server.
#
# Usage: kaizenctl_test.sh SERVER_BIN KAIZENCTL_BIN PYTHON [RESNET18_PT]
#   PYTHON must be able to import PIL, torch and grpc (Debian's
#   /usr/bin/python3 with python3-pil, python3-torch, python3-grpcio).
#   RESNET18_PT defaults to $(dirname KAIZENCTL_BIN)/tests/fixtures/resnet18.pt.
#   KAIZEN_FASHION_MNIST_DIR overrides /usr/share/datasets/fashion-mnist.
set -euo pipefail

if [[ $# -lt 3 || $# -gt 4 ]]; then
  echo "usage: $0 SERVER_BIN KAIZENCTL_BIN PYTHON [RESNET18_PT]" >&2
  exit 2
fi
SERVER_BIN=$1
KAIZENCTL=$2
PYTHON=$3
RESNET18=${4:-$(dirname "$KAIZENCTL")/tests/fixtures/resnet18.pt}
FASHION_DIR=${KAIZEN_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
# Bounds, in seconds: server start-up, and any single kaizenctl call.
STARTUP_TIMEOUT=30
CALL_TIMEOUT=300

for f in "$SERVER_BIN" "$KAIZENCTL"; do
  [[ -x $f ]] || { echo "kaizenctl e2e: $f is not an executable" >&2; exit 1; }
done
[[ -f $RESNET18 ]] || { echo "kaizenctl e2e: model fixture $RESNET18 is missing (build kaizen_fixtures)" >&2; exit 1; }
[[ -f $FASHION_DIR/train-images-idx3-ubyte.gz ]] || { echo "kaizenctl e2e: Fashion-MNIST not found in $FASHION_DIR" >&2; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/kaizenctl-e2e.XXXXXX")
DATA_DIR=$TMP/data
SERVER_PID=""
PY_SERVER_PID=""
SERVER_LOG=""
SERVER_STARTS=0
PORT=""
PASSED=0
FAILED=0

stop_server() {
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}

cleanup() {
  local rc=$?
  stop_server
  if [[ -n $PY_SERVER_PID ]]; then
    kill -TERM "$PY_SERVER_PID" 2>/dev/null || true
    wait "$PY_SERVER_PID" 2>/dev/null || true
  fi
  if [[ $rc -ne 0 && -n $SERVER_LOG && -f $SERVER_LOG ]]; then
    echo "--- last lines of $SERVER_LOG ---" >&2
    tail -n 30 "$SERVER_LOG" >&2 || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

# Stops the whole test: for steps the rest depends on.
die() {
  echo "kaizenctl e2e: FATAL: $*" >&2
  echo "kaizenctl e2e: $PASSED passed, $((FAILED + 1)) failed" >&2
  exit 1
}
pass() {
  PASSED=$((PASSED + 1))
  echo "ok   - $*"
}
fail() {
  FAILED=$((FAILED + 1))
  echo "FAIL - $*" >&2
}

free_port() {
  "$PYTHON" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

ctl() {
  timeout "$CALL_TIMEOUT" "$KAIZENCTL" --server="127.0.0.1:$PORT" "$@"
}

# Starts the server on fresh ports and waits until `datasets list` answers.
start_server() {
  local attempt
  for attempt in 1 2 3; do
    PORT=$(free_port)
    local mport
    mport=$(free_port)
    SERVER_LOG=$TMP/server-$((++SERVER_STARTS)).log
    "$SERVER_BIN" --data_dir="$DATA_DIR" --grpc_port="$PORT" \
      --metrics_port="$mport" >"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
    local deadline=$((SECONDS + STARTUP_TIMEOUT))
    while ((SECONDS < deadline)); do
      if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
        break  # died (a port taken meanwhile?): try again on other ports
      fi
      if timeout 10 "$KAIZENCTL" --server="127.0.0.1:$PORT" --timeout=5s \
        datasets list >/dev/null 2>&1; then
        return 0
      fi
      sleep 0.3
    done
    if [[ -n $SERVER_PID ]]; then
      stop_server
      die "server did not answer on 127.0.0.1:$PORT within ${STARTUP_TIMEOUT}s (log: $SERVER_LOG)"
    fi
    echo "kaizenctl e2e: server exited during start-up (attempt $attempt); log:" >&2
    tail -n 20 "$SERVER_LOG" >&2 || true
  done
  die "server would not start"
}

# check_json DESCRIPTION FILE PYTHON_CODE: runs the code with `d` bound to
# the parsed JSON document in FILE; the code asserts.
check_json() {
  local what=$1 file=$2 code=$3 out
  if out=$("$PYTHON" "$TMP/check_json.py" "$file" "$code" 2>&1); then
    pass "$what"
  else
    fail "$what"
    # shellcheck disable=SC2001
    echo "$out" | sed 's/^/       /' >&2
  fi
}

# expect_error CODE DESCRIPTION ARGS...: the call must exit 1 and name CODE.
expect_error() {
  local code=$1 what=$2 rc=0 err
  shift 2
  err=$(ctl "$@" 2>&1 >/dev/null) || rc=$?
  if ((rc == 0)); then
    fail "$what: expected $code, but 'kaizenctl $*' succeeded"
  elif ((rc != 1)); then
    fail "$what: expected exit status 1, got $rc; stderr: $err"
  elif [[ $err != *"kaizenctl: $code:"* ]]; then
    fail "$what: expected 'kaizenctl: $code:' on stderr, got: $err"
  else
    pass "$what ($code)"
  fi
}

# run_json OUT_FILE ARGS...: a call that must succeed, its JSON in OUT_FILE.
run_json() {
  local out=$1 rc=0
  shift
  ctl --output=json "$@" >"$out" 2>"$out.err" || rc=$?
  if ((rc != 0)); then
    fail "kaizenctl $* exited with $rc: $(cat "$out.err")"
    return 1
  fi
}

cat >"$TMP/check_json.py" <<'EOF'
import json
import sys

with open(sys.argv[1]) as f:
    text = f.read()
try:
    d = json.loads(text)
except ValueError as e:
    sys.exit("not one JSON document (%s): %r" % (e, text[:500]))
try:
    exec(sys.argv[2], {"d": d})
except AssertionError as e:
    sys.exit("assertion failed: %s\n%s" % (e, sys.argv[2].strip()))
EOF

# --- image folders, made with PIL ---------------------------------------------
"$PYTHON" - "$TMP" <<'EOF'
import os
import random
import shutil
import sys

from PIL import Image

root = sys.argv[1]
rng = random.Random(7)


def image(path, fmt):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = bytes(rng.randrange(256) for _ in range(32 * 32 * 3))
    Image.frombytes("RGB", (32, 32), pixels).save(path, fmt)


photos = os.path.join(root, "photos")
for cls in ("birds", "cats", "dogs"):
    for i in range(4):
        if i % 2 == 0:
            image(os.path.join(photos, cls, "img%d.png" % i), "PNG")
        else:
            image(os.path.join(photos, cls, "img%d.jpg" % i), "JPEG")
# A corrupt JPEG (left out and reported), an exact duplicate (kept and
# reported) and hidden files (ignored).
with open(os.path.join(photos, "cats", "broken.jpg"), "wb") as f:
    f.write(b"\xff\xd8\xff\xe0 this is not really a JPEG")
shutil.copyfile(os.path.join(photos, "dogs", "img0.png"),
                os.path.join(photos, "dogs", "zz_copy.png"))
with open(os.path.join(photos, ".DS_Store"), "wb") as f:
    f.write(b"\0\0\0\1Bud1")
with open(os.path.join(photos, "birds", ".hidden.png"), "wb") as f:
    f.write(b"hidden")

single = os.path.join(root, "single")
for i in range(3):
    image(os.path.join(single, "only", "img%d.png" % i), "PNG")

os.makedirs(os.path.join(root, "empty"))

# Fine-tuning: two easily told apart classes (dark and light noise), 30
# small images each, so that a few epochs of cnn-small take seconds.
tiny = os.path.join(root, "tiny")
for cls, low in (("dark", 0), ("light", 150)):
    for i in range(30):
        path = os.path.join(tiny, cls, "img%02d.png" % i)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pixels = bytes(low + rng.randrange(106) for _ in range(16 * 16 * 3))
        Image.frombytes("RGB", (16, 16), pixels).save(path, "PNG")
EOF

# --- start ------------------------------------------------------------------
start_server
pass "server answers on 127.0.0.1:$PORT"

# --- Fashion-MNIST (IDX, labels found beside the images) --------------------
if run_json "$TMP/fashion.json" datasets upload fashion-train \
  "$FASHION_DIR/train-images-idx3-ubyte.gz"; then
  check_json "fashion-train: 60000 examples, 6000 in each of 10 classes" \
    "$TMP/fashion.json" '
assert d["name"] == "fashion-train", d["name"]
assert d["format"] == "DATASET_FORMAT_IDX", d["format"]
assert int(d["numExamples"]) == 60000, d["numExamples"]
counts = {int(c.get("label", 0)): int(c["count"]) for c in d["classes"]}
assert counts == {label: 6000 for label in range(10)}, counts
assert [int(x) for x in d["inputShape"]] == [1, 28, 28], d["inputShape"]
'
fi

# --- an image folder, archived on the fly -----------------------------------
if run_json "$TMP/photos.json" datasets upload photos "$TMP/photos" \
  --description="three classes"; then
  check_json "photos: per-class counts (corrupt file out, duplicate kept)" \
    "$TMP/photos.json" '
assert d["format"] == "DATASET_FORMAT_IMAGE_FOLDER", d["format"]
counts = {c["className"]: int(c["count"]) for c in d["classes"]}
assert counts == {"birds": 4, "cats": 4, "dogs": 5}, counts
assert int(d["numExamples"]) == 13, d["numExamples"]
assert [int(x) for x in d["inputShape"]] == [3, 32, 32], d["inputShape"]
assert d["description"] == "three classes", d["description"]
'
  check_json "photos: report lists the corrupt file with a reason" \
    "$TMP/photos.json" '
failed = d["report"]["failedFiles"]
assert [f["path"].split("/")[-2:] for f in failed] == [["cats", "broken.jpg"]], failed
assert failed[0]["reason"], failed
'
  check_json "photos: report lists the duplicate" "$TMP/photos.json" '
dups = d["report"]["duplicates"]
assert len(dups) == 1, dups
pair = sorted([dups[0]["path"].split("/")[-2:], dups[0]["duplicateOf"].split("/")[-2:]])
assert pair == [["dogs", "img0.png"], ["dogs", "zz_copy.png"]], dups
assert int(d["report"]["duplicateCount"]) == 1, d["report"]["duplicateCount"]
'
  check_json "photos: report lists the hidden files as ignored" \
    "$TMP/photos.json" '
ignored = d["report"]["ignoredFiles"]
assert any(p.endswith(".DS_Store") for p in ignored), ignored
assert any(p.endswith(".hidden.png") for p in ignored), ignored
'
fi
# The same folder under a stored-resolution cap: 32x32 images stored 16x16.
if run_json "$TMP/photos16.json" datasets upload photos-16 "$TMP/photos" \
  --max_stored_shorter_side=16; then
  check_json "photos-16: stored downscaled, and the report says so" "$TMP/photos16.json" '
assert [int(x) for x in d["inputShape"]] == [3, 16, 16], d["inputShape"]
report = d["report"]
assert int(report["maxStoredShorterSide"]) == 16, report
assert int(report["downscaledImages"]) == int(d["numExamples"]) == 13, report
'
  if out=$(ctl datasets get photos-16 2>&1) &&
    [[ $out == *"stored resolution: shorter side at most 16 pixels (13 images downscaled)"* ]]; then
    pass "datasets get shows the stored resolution"
  else
    fail "datasets get photos-16 lacks the stored resolution: $out"
  fi
  ctl datasets delete photos-16 >/dev/null || fail "datasets delete photos-16"
fi
if out=$(ctl datasets get photos 2>&1); then
  if [[ $out == *"broken.jpg"* && $out == *"zz_copy.png"* && $out == *"dogs"* ]]; then
    pass "datasets get (table) shows classes and the report"
  else
    fail "datasets get photos (table) lacks the report: $out"
  fi
else
  fail "datasets get photos failed: $out"
fi

# Labelled text: a gzip CSV (format from the name), its columns named by
# flags, one row not UTF-8 kept out with its line; the upload is deleted again
# so that the list below holds the image datasets.
printf 'id,review,stars\n1,"great, really",5\n2,dull,1\n3,bad \377 bytes,1\n4,"fine\nfilm",5\n' |
  gzip -c >"$TMP/reviews.csv.gz"
if run_json "$TMP/reviews.json" datasets upload reviews "$TMP/reviews.csv.gz" \
  --text_field=review --label_field=stars; then
  check_json "reviews: a text dataset with a row kept out at line 4" "$TMP/reviews.json" '
assert d["format"] == "DATASET_FORMAT_TEXT_CSV", d["format"]
assert int(d["numExamples"]) == 3, d
assert [c["className"] for c in d["classes"]] == ["1", "5"], d["classes"]
report = d["report"]
assert report["failedFiles"][0]["path"] == "reviews.csv.gz line 4", report
assert "not UTF-8" in report["failedFiles"][0]["reason"], report
assert report["text"]["textField"] == "review", report
'
  if out=$(ctl datasets get reviews 2>&1) && [[ $out == *"text-csv"* ]] &&
    [[ $out == *"rows kept out (1)"* && $out == *"text length (code points)"* ]]; then
    pass "datasets get shows a text dataset's report"
  else
    fail "datasets get reviews lacks the text report: $out"
  fi
  expect_error INVALID_ARGUMENT "an image architecture on a text dataset" finetune start --base=cnn-small \
    --dataset=reviews --output_model=never --strategy=scratch
  ctl datasets delete reviews >/dev/null || fail "datasets delete reviews"
fi
printf 'review,stars\ngood,5\n' >"$TMP/nocolumn.csv"
expect_error INVALID_ARGUMENT "text table without the text column" datasets upload nocol \
  "$TMP/nocolumn.csv"

# --- what users get wrong ---------------------------------------------------
expect_error INVALID_ARGUMENT "bad dataset name" datasets upload ../evil "$TMP/photos"
expect_error ALREADY_EXISTS "duplicate dataset name" datasets upload photos "$TMP/photos"
expect_error INVALID_ARGUMENT "single-class folder" datasets upload single "$TMP/single"
expect_error INVALID_ARGUMENT "empty folder" datasets upload empty "$TMP/empty"
expect_error NOT_FOUND "unknown dataset" datasets get no-such-dataset

if run_json "$TMP/list.json" datasets list; then
  check_json "datasets list: exactly the 2 good datasets" "$TMP/list.json" '
names = sorted(x["name"] for x in d["datasets"])
assert names == ["fashion-train", "photos"], names
'
fi
if out=$(ctl datasets list 2>&1) && [[ $out == NAME* && $out == *fashion-train* && $out == *photos* ]]; then
  pass "datasets list (table)"
else
  fail "datasets list (table) unexpected: $out"
fi

# --- models -----------------------------------------------------------------
if run_json "$TMP/r18.json" models upload r18 "$RESNET18"; then
  check_json "r18: head fc with 1000 outputs, 11689512 parameters" \
    "$TMP/r18.json" '
assert d["name"] == "r18", d["name"]
assert int(d["version"]) == 1, d["version"]
assert d["head"]["modulePath"] == "fc", d["head"]
assert int(d["head"]["outFeatures"]) == 1000, d["head"]
assert int(d["parameterCount"]) == 11689512, d["parameterCount"]
'
fi
expect_error ALREADY_EXISTS "duplicate model name" models upload r18 "$RESNET18"
expect_error NOT_FOUND "unknown model" models get no-such-model

FIXTURE_SHA=$(sha256sum "$RESNET18" | cut -d' ' -f1)
download_and_compare() {
  local out=$TMP/download-$1.pt rc=0 err
  err=$(ctl models download r18 "$out" 2>&1 >/dev/null) || rc=$?
  if ((rc != 0)); then
    fail "models download r18 ($1) exited with $rc: $err"
  elif [[ $(sha256sum "$out" | cut -d' ' -f1) != "$FIXTURE_SHA" ]]; then
    fail "models download r18 ($1): sha256 differs from the uploaded file"
  else
    pass "models download r18 ($1): same sha256 as the uploaded file"
  fi
}
download_and_compare before-restart

run_json "$TMP/datasets-before.json" datasets list || true
run_json "$TMP/models-before.json" models list || true

# --- kill -9 and restart on the same data dir --------------------------------
kill -KILL "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=""
start_server
pass "server restarted after kill -9"

if run_json "$TMP/datasets-after.json" datasets list; then
  check_json "after restart: both datasets listed with the same counts" \
    "$TMP/datasets-after.json" '
import json
before = json.load(open("'"$TMP"'/datasets-before.json"))
by_name = lambda doc: {x["name"]: x for x in doc["datasets"]}
after = by_name(d)
assert sorted(after) == ["fashion-train", "photos"], sorted(after)
assert int(after["fashion-train"]["numExamples"]) == 60000
assert after == by_name(before), "datasets changed across the restart"
'
fi
if run_json "$TMP/models-after.json" models list; then
  check_json "after restart: the models are listed unchanged" \
    "$TMP/models-after.json" '
import json
before = json.load(open("'"$TMP"'/models-before.json"))
# Built-in architectures are listed too; r18 is the only upload.
uploaded = [m for m in d["models"] if m["source"] != "MODEL_SOURCE_BUILTIN"]
assert [m["name"] for m in uploaded] == ["r18"], [m["name"] for m in d["models"]]
assert int(uploaded[0]["parameterCount"]) == 11689512, uploaded[0]
changed = {k: (before_m.get(k), after_m.get(k))
           for before_m, after_m in zip(before["models"], d["models"])
           for k in set(before_m) | set(after_m) if before_m.get(k) != after_m.get(k)}
assert d == before, ("models changed across the restart", changed)
'
fi
download_and_compare after-restart

# --- fine-tuning --------------------------------------------------------------
# A 2-epoch scratch run of cnn-small on 60 tiny images, followed to its end.
ctl datasets upload tiny "$TMP/tiny" >/dev/null 2>"$TMP/tiny.err" ||
  die "datasets upload tiny failed: $(cat "$TMP/tiny.err")"
# --dry_run: the job the server would queue, its defaults resolved, and no job.
if run_json "$TMP/dry.json" finetune start --base=cnn-small --dataset=tiny --strategy=scratch \
  --batch_size=16 --dry_run; then
  check_json "finetune start --dry_run shows the resolved job and queues none" "$TMP/dry.json" '
assert d.get("id", "") == "", d
h = d["resolvedHyperparameters"]
assert h["epochs"] > 0 and h["batchSize"] == 16 and h["learningRate"] > 0, h
'
fi
if run_json "$TMP/dry-jobs.json" jobs list; then
  check_json "--dry_run left no job" "$TMP/dry-jobs.json" 'assert not d.get("jobs"), d'
fi
rc=0
ctl finetune start --base=cnn-small --dataset=tiny --output_model=tiny-cnn \
  --strategy=scratch --epochs=2 --batch_size=16 --seed=7 --watch \
  >"$TMP/ft-watch.txt" 2>"$TMP/ft-watch.err" || rc=$?
JOB_ID=$(sed -n 's/^job \([^ ]*\) queued$/\1/p' "$TMP/ft-watch.txt" | head -n 1)
[[ -n $JOB_ID ]] || die "finetune start printed no 'job ID queued' line: $(cat "$TMP/ft-watch.txt" "$TMP/ft-watch.err")"
if ((rc == 0)); then
  pass "finetune start --watch: job $JOB_ID succeeded (exit 0)"
else
  fail "finetune start --watch exited with $rc: $(cat "$TMP/ft-watch.txt" "$TMP/ft-watch.err")"
fi
watch_text=$(cat "$TMP/ft-watch.txt")
if [[ $watch_text == *"epoch 1: train loss"* && $watch_text == *"epoch 2: train loss"* &&
  $watch_text == *"checkpoint v"* && $watch_text == *"job $JOB_ID succeeded"* ]]; then
  pass "finetune start --watch prints epoch, checkpoint and summary lines"
else
  fail "finetune start --watch output lacks epoch/checkpoint/summary lines: $watch_text"
fi
if [[ $(cat "$TMP/ft-watch.err") == *$'\r'* ]]; then
  fail "finetune start --watch redrew a progress bar on a stderr that is not a terminal"
else
  pass "no progress bar when stderr is not a terminal"
fi

if run_json "$TMP/job.json" jobs get "$JOB_ID"; then
  check_json "jobs get: SUCCEEDED, 2 epochs of history, a version written" \
    "$TMP/job.json" '
assert d["id"] == "'"$JOB_ID"'", d["id"]
assert d["state"] == "JOB_STATE_SUCCEEDED", (d["state"], d.get("error"))
assert int(d["latestVersion"]) >= 1, d["latestVersion"]
assert int(d["bestVersion"]) >= 1, d["bestVersion"]
assert [int(m["epoch"]) for m in d["history"]] == [1, 2], d["history"]
assert d["request"]["strategy"] == "STRATEGY_SCRATCH", d["request"]
assert int(d["resolvedHyperparameters"]["epochs"]) == 2, d["resolvedHyperparameters"]
'
fi
if out=$(ctl jobs get "$JOB_ID" 2>&1) && [[ $out == *"succeeded"* && $out == *"TRAIN LOSS"* ]]; then
  pass "jobs get (table) shows the state and the history"
else
  fail "jobs get $JOB_ID (table): $out"
fi
# jobs export: the PyTorchJob on stdout, its folder on the server's volume.
if out=$(ctl jobs export "$JOB_ID" --world_size=3 --threads=2 --memory_mb=3000 \
  --volume_claim=team-data 2>&1) &&
  [[ $out == *"kind: PyTorchJob"* && $out == *"replicas: 2"* &&
    $out == *'claimName: "team-data"'* && $out == *'cpu: "2"'* &&
    $out == *$'memory: "3000Mi"\n                limits:\n                  memory: "3000Mi"'* ]] &&
  folder=$(grep -m1 -o 'subPath: exports/.*' <<<"$out" | cut -d' ' -f2) &&
  [[ -n $folder && -f $DATA_DIR/$folder/spec.json && -f $DATA_DIR/$folder/base.pt ]]; then
  pass "jobs export prints a PyTorchJob of 3 pods; the server wrote $folder"
else
  fail "jobs export $JOB_ID: $out"
fi
expect_error INVALID_ARGUMENT "jobs export: a volume claim that is no Kubernetes name" \
  jobs export "$JOB_ID" --volume_claim=Team_Data
expect_error INVALID_ARGUMENT "jobs export: less memory than a pod can run in" \
  jobs export "$JOB_ID" --memory_mb=100
# jobs exports / delete-export: the folder listed, then gone.
if out=$(ctl jobs exports "$JOB_ID" 2>&1) && [[ $out == *"DIRECTORY"* && $out == *"$folder  $JOB_ID"* ]]; then
  pass "jobs exports lists $folder"
else
  fail "jobs exports $JOB_ID (expected $folder): $out"
fi
if out=$(ctl jobs delete-export "$folder" 2>&1) && [[ $out == "deleted $folder" ]] &&
  [[ ! -e $DATA_DIR/$folder ]] && [[ $(ctl jobs exports "$JOB_ID") != *"$folder"* ]]; then
  pass "jobs delete-export removes $folder"
else
  fail "jobs delete-export $folder: $out"
fi
expect_error NOT_FOUND "jobs delete-export: an export already deleted" jobs delete-export "$folder"
expect_error INVALID_ARGUMENT "jobs delete-export: a path outside exports/" \
  jobs delete-export exports/../models
if run_json "$TMP/tiny-model.json" models get tiny-cnn; then
  check_json "models get tiny-cnn: a fine-tuned version made by the job" \
    "$TMP/tiny-model.json" '
assert d["source"] == "MODEL_SOURCE_FINE_TUNED", d["source"]
assert d["jobId"] == "'"$JOB_ID"'", d.get("jobId")
assert sorted(d["classNames"]) == ["dark", "light"], d.get("classNames")
'
fi
# Evaluation of the job's model on its 60 images: JSON and the table.
if run_json "$TMP/eval.json" models evaluate tiny-cnn tiny --top_k=1; then
  check_json "models evaluate (JSON): every image counted once, accuracy from the confusion matrix" \
    "$TMP/eval.json" '
n = int(d["examples"])
assert n == 60, d
cols = d["predictedClasses"]
conf = [int(c) for c in d["confusion"]]
assert len(conf) == len(d["classes"]) * len(cols) and sum(conf) == n, d
right = sum(conf[i * len(cols) + cols.index(c["name"])] for i, c in enumerate(d["classes"]))
assert abs(right / n - d.get("accuracy", 0)) < 1e-9, (right, d.get("accuracy"))
assert d["topK"] == 1 and d.get("topKAccuracy", 0) == d.get("accuracy", 0), d
assert sum(int(c["support"]) for c in d["classes"]) == n, d["classes"]
'
fi
if out=$(ctl models evaluate tiny-cnn tiny 2>&1) && [[ $out == *"PRECISION"* &&
  $out == *"Confusion matrix"* && $out == *"top-2"* ]]; then
  pass "models evaluate (table) shows the summary, the classes and the confusion matrix"
else
  fail "models evaluate tiny-cnn tiny (table): $out"
fi
expect_error FAILED_PRECONDITION "evaluate a built-in (random weights)" models evaluate cnn-small tiny
expect_error NOT_FOUND "evaluate on an unknown dataset" models evaluate tiny-cnn no-such-dataset

# Tuning: 3 trials of 2 epochs (one round), scored by a validation split
# (30 images per class); jobs get shows the trials and why the winner won.
if out=$(ctl finetune start --base=cnn-small --dataset=tiny --output_model=tiny-tuned \
  --strategy=scratch --epochs=2 --batch_size=16 --seed=7 --tune_trials=3 --tune_seed=2 \
  --watch 2>&1) && [[ $out == *"tuning trial 3 (round 1)"* && $out == *"tuning: trial "* ]]; then
  pass "finetune start --tune_trials: the watch shows each trial and the winner"
else
  fail "finetune start --tune_trials: $out"
fi
TUNED_ID=$(sed -n 's/^job \([^ ]*\) queued$/\1/p' <<<"$out" | head -n 1)
if out=$(ctl jobs get "$TUNED_ID" 2>&1) && [[ $out == *"tuning:"* &&
  $out == *"stratified 20% validation split"* && $out == *"winner"* &&
  $out == *"result:     trial "* ]]; then
  pass "jobs get shows the tuning trials, how they were scored and the result"
else
  fail "jobs get $TUNED_ID (tuning): $out"
fi
expect_error INVALID_ARGUMENT "65 tuning trials" finetune start --base=cnn-small --dataset=tiny \
  --output_model=tiny-too-many --strategy=scratch --tune_trials=65
if run_json "$TMP/jobs.json" jobs list --state=succeeded; then
  check_json "jobs list --state=succeeded lists the job" "$TMP/jobs.json" '
assert "'"$JOB_ID"'" in [j["id"] for j in d["jobs"]], d
assert all(j["state"] == "JOB_STATE_SUCCEEDED" for j in d["jobs"]), d
'
fi

# A finished job's events replay to the end, as JSON Lines.
rc=0
ctl --output=json jobs watch "$JOB_ID" >"$TMP/events.jsonl" 2>"$TMP/events.err" || rc=$?
if ((rc == 0)); then
  check_json "jobs watch (finished job) replays every event, in order, to SUCCEEDED" \
    "$TMP/job.json" '
import json
events = [json.loads(line) for line in open("'"$TMP"'/events.jsonl")]
seqs = [int(e["sequence"]) for e in events]
assert seqs == list(range(1, len(seqs) + 1)), seqs
assert seqs[-1] == int(d["lastSequence"]), (seqs[-1], d["lastSequence"])
assert events[-1].get("state") == "JOB_STATE_SUCCEEDED", events[-1]
assert sum("epochSummary" in e for e in events) == 2, events
assert any("checkpoint" in e for e in events), events
'
  LAST_SEQ=$(wc -l <"$TMP/events.jsonl")
  if out=$(ctl --output=json jobs watch "$JOB_ID" --after_sequence=$((LAST_SEQ - 1)) 2>&1) &&
    [[ $(echo "$out" | wc -l) -eq 1 && $out == *'"sequence":"'"$LAST_SEQ"'"'* ]]; then
    pass "jobs watch --after_sequence resumes after that event"
  else
    fail "jobs watch --after_sequence=$((LAST_SEQ - 1)): $out"
  fi
else
  fail "jobs watch $JOB_ID exited with $rc: $(cat "$TMP/events.err")"
fi
expect_error FAILED_PRECONDITION "cancel a finished job" jobs cancel "$JOB_ID"
expect_error NOT_FOUND "unknown job" jobs get ft-no-such-job
expect_error ALREADY_EXISTS "output model exists" finetune start --base=cnn-small \
  --dataset=tiny --output_model=tiny-cnn --strategy=scratch

# A long job, cancelled: watching it then ends with CANCELLED and exit 1.
if out=$(ctl finetune start --base=cnn-small --dataset=tiny \
  --output_model=tiny-long --strategy=scratch --epochs=500 2>&1); then
  LONG_ID=$(echo "$out" | sed -n 's/^job \([^ ]*\) .*/\1/p' | head -n 1)
  if out=$(ctl jobs cancel "$LONG_ID" 2>&1); then
    pass "jobs cancel $LONG_ID"
  else
    fail "jobs cancel $LONG_ID: $out"
  fi
  rc=0
  err=$(ctl jobs watch "$LONG_ID" 2>&1 >/dev/null) || rc=$?
  if ((rc == 1)) && [[ $err == *"kaizenctl: CANCELLED:"* ]]; then
    pass "jobs watch of a cancelled job exits 1 (CANCELLED)"
  else
    fail "jobs watch $LONG_ID: expected exit 1 with CANCELLED, got $rc: $err"
  fi
else
  fail "finetune start (long job): $out"
fi

# --- pause and resume ---------------------------------------------------------
# job_field ID FIELD: one field of `jobs get --output=json` (empty if unset).
job_field() {
  ctl --output=json jobs get "$1" 2>/dev/null |
    "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin).get(sys.argv[1], ""))' "$2" ||
    true
}
# wait_for_job ID PYTHON_CONDITION: polls `jobs get` for up to 60 s until
# the condition on the job `d` holds.
wait_for_job() {
  local _
  for _ in $(seq 300); do
    if ctl --output=json jobs get "$1" 2>/dev/null |
      "$PYTHON" -c 'import json, sys; d = json.load(sys.stdin); sys.exit(0 if eval(sys.argv[1]) else 1)' "$2"; then
      return 0
    fi
    sleep 0.2
  done
  return 1
}
# A long job paused while it runs: it checkpoints and frees its worker,
# keeps its dataset, stays paused across a graceful restart, and runs again
# from its checkpoint once resumed.
if out=$(ctl finetune start --base=cnn-small --dataset=tiny \
  --output_model=tiny-paused --strategy=scratch --epochs=500 --batch_size=16 2>&1); then
  PAUSE_ID=$(echo "$out" | sed -n 's/^job \([^ ]*\) .*/\1/p' | head -n 1)
  # Paused once it has trained a while (its first checkpoint is written).
  wait_for_job "$PAUSE_ID" 'int(d.get("latestVersion", 0)) >= 1' || fail "job $PAUSE_ID never ran"
  if out=$(ctl jobs pause "$PAUSE_ID" 2>&1) &&
    [[ $out == "job $PAUSE_ID paused after step "*"; checkpoint tiny-paused:"* ]]; then
    pass "jobs pause waits for the pause and says where it stopped: $out"
  else
    fail "jobs pause $PAUSE_ID: $out"
  fi
  if run_json "$TMP/paused.json" jobs get "$PAUSE_ID"; then
    check_json "jobs get: PAUSED by a user, with a checkpoint" "$TMP/paused.json" '
assert d["state"] == "JOB_STATE_PAUSED", d["state"]
assert d["pauseReason"] == "paused by a user", d.get("pauseReason")
assert d["pauseCount"] == 1, d.get("pauseCount")
assert int(d["latestVersion"]) >= 1, d.get("latestVersion")
assert 0 < int(d["step"]) < int(d["totalSteps"]), (d.get("step"), d.get("totalSteps"))
'
  fi
  PAUSED_VERSION=$(job_field "$PAUSE_ID" latestVersion)
  if out=$(ctl jobs get "$PAUSE_ID" 2>&1) && [[ $out == *"paused by a user (paused 1 time)"* ]]; then
    pass "jobs get (table) shows why the job is paused"
  else
    fail "jobs get $PAUSE_ID (table): $out"
  fi
  if run_json "$TMP/paused-list.json" jobs list --state=paused; then
    check_json "jobs list --state=paused lists exactly the paused job" "$TMP/paused-list.json" '
assert [j["id"] for j in d["jobs"]] == ["'"$PAUSE_ID"'"], [j["id"] for j in d["jobs"]]
'
  fi
  if out=$(ctl jobs pause "$PAUSE_ID" 2>&1) && [[ $out == "job $PAUSE_ID paused"* ]]; then
    pass "jobs pause of a paused job is a no-op"
  else
    fail "jobs pause $PAUSE_ID (again): $out"
  fi
  expect_error FAILED_PRECONDITION "delete the dataset of a paused job" datasets delete tiny
  stop_server
  start_server
  if [[ $(job_field "$PAUSE_ID" state) == JOB_STATE_PAUSED ]]; then
    pass "a paused job is still paused after a graceful restart"
  else
    fail "after the restart job $PAUSE_ID is $(job_field "$PAUSE_ID" state), not PAUSED"
  fi
  if out=$(ctl jobs resume "$PAUSE_ID" 2>&1) &&
    [[ $out == "job $PAUSE_ID queued; it continues from checkpoint tiny-paused:$PAUSED_VERSION" ]]; then
    pass "jobs resume: $out"
  else
    fail "jobs resume $PAUSE_ID: $out"
  fi
  # Running again, from its checkpoint: a newer version appears.
  if wait_for_job "$PAUSE_ID" 'int(d.get("latestVersion", 0)) > '"$PAUSED_VERSION"; then
    pass "the resumed job trains on and writes its next checkpoint"
  else
    fail "job $PAUSE_ID wrote no checkpoint after jobs resume (state $(job_field "$PAUSE_ID" state))"
  fi
  ctl jobs cancel "$PAUSE_ID" >/dev/null 2>&1 || fail "jobs cancel $PAUSE_ID"
  wait_for_job "$PAUSE_ID" 'd["state"] == "JOB_STATE_CANCELLED"' || fail "job $PAUSE_ID was not cancelled"
else
  fail "finetune start (job to pause): $out"
fi
expect_error FAILED_PRECONDITION "pause a finished job" jobs pause "$JOB_ID"
expect_error FAILED_PRECONDITION "resume a finished job" jobs resume "$JOB_ID"
expect_error NOT_FOUND "pause an unknown job" jobs pause ft-no-such-job
expect_error NOT_FOUND "resume an unknown job" jobs resume ft-no-such-job

# --- predictions ----------------------------------------------------------------
# tiny-cnn (dark vs light noise, 16x16 RGB, 2 epochs: versions 1 and 2) on
# images of its training set (PNG) and a 32x32 JPEG (resized by the server).
DARK=$TMP/tiny/dark/img00.png
LIGHT=$TMP/tiny/light/img03.png
JPEG=$TMP/photos/birds/img1.jpg
LATEST=$("$PYTHON" -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["latestVersion"]))' "$TMP/tiny-model.json" 2>/dev/null || echo 0)
BEST=$("$PYTHON" -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["bestVersion"]))' "$TMP/tiny-model.json" 2>/dev/null || echo 0)

if out=$(ctl predict tiny-cnn "$DARK" "$LIGHT" 2>&1); then
  header=$(echo "$out" | head -n 1)
  dark_row=$(echo "$out" | grep -F "$DARK" || true)
  light_row=$(echo "$out" | grep -F "$LIGHT" || true)
  if [[ $header == "FILE"*"RANK"*"LABEL"*"INDEX"*"PROBABILITY"*"VERSION" &&
    $(echo "$out" | wc -l) -eq 3 && $dark_row == *" dark "* && $light_row == *" light "* &&
    $dark_row == *" $LATEST" && $light_row == *" $LATEST" ]]; then
    pass "predict (table): one row per file, right labels, latest version $LATEST"
  else
    fail "predict tiny-cnn (table), expected dark/light rows answered by v$LATEST: $out"
  fi
else
  fail "predict tiny-cnn (table) failed: $out"
fi

if run_json "$TMP/predict.json" predict tiny-cnn "$DARK" "$LIGHT" "$JPEG" --top_k=2; then
  check_json "predict --top_k=2 (JSON): 2 classes per input, sorted, summing to 1" \
    "$TMP/predict.json" '
assert d["model"] == "tiny-cnn", d["model"]
assert int(d["version"]) == '"$LATEST"', d["version"]
preds = d["predictions"]
assert len(preds) == 3, preds
for p in preds:
    cls = p["classes"]
    assert len(cls) == 2, cls
    assert sorted(c["label"] for c in cls) == ["dark", "light"], cls
    assert cls[0]["probability"] >= cls[1]["probability"], cls
    assert abs(sum(c["probability"] for c in cls) - 1) < 1e-4, cls
    for c in cls:
        assert int(c.get("index", 0)) == ["dark", "light"].index(c["label"]), c
assert preds[0]["classes"][0]["label"] == "dark", preds[0]
assert preds[1]["classes"][0]["label"] == "light", preds[1]
'
fi
if run_json "$TMP/predict-v1.json" predict tiny-cnn --version=1 "$DARK"; then
  check_json "predict --version=1 pins version 1" "$TMP/predict-v1.json" '
assert int(d["version"]) == 1, d["version"]
assert len(d["predictions"]) == 1 and len(d["predictions"][0]["classes"]) == 1, d
'
fi
if run_json "$TMP/predict-best.json" predict tiny-cnn:1 --policy=best "$DARK"; then
  check_json "predict NAME:1 --policy=best: the pin wins" "$TMP/predict-best.json" '
assert int(d["version"]) == 1, d["version"]
'
fi
if run_json "$TMP/predict-best.json" predict tiny-cnn --policy=best "$DARK"; then
  check_json "predict --policy=best answers with the best version ($BEST)" \
    "$TMP/predict-best.json" '
assert int(d["version"]) == '"$BEST"', d["version"]
'
fi
expect_error INVALID_ARGUMENT "predict: a corrupt JPEG" predict tiny-cnn "$DARK" "$TMP/photos/cats/broken.jpg"
expect_error NOT_FOUND "predict: unknown model" predict no-such-model "$DARK"
expect_error NOT_FOUND "predict: unknown version" predict tiny-cnn:99 "$DARK"
expect_error FAILED_PRECONDITION "predict: a built-in architecture" predict cnn-small "$DARK"
expect_error NOT_FOUND "predict: a missing file" predict tiny-cnn "$TMP/no-such-file.png"
rc=0
err=$(ctl predict tiny-cnn 2>&1 >/dev/null) || rc=$?
if ((rc == 2)) && [[ $err == *"usage: kaizenctl predict MODEL"* ]]; then
  pass "predict without files is a usage error (exit 2)"
else
  fail "predict without files: expected exit 2 with the synopsis, got $rc: $err"
fi

# bench predict: random tensors of the model's input shape, then the image
# with batching off.
if run_json "$TMP/bench.json" bench predict tiny-cnn --duration=1 --warmup=0.5 --concurrency=4; then
  check_json "bench predict (JSON): every field, 0 errors, versions $LATEST only" \
    "$TMP/bench.json" '
for key in ("model", "batching", "input", "concurrency", "inputs_per_request",
            "warmup_seconds", "duration_seconds", "requests", "inputs",
            "requests_per_second", "inputs_per_second", "latency_ms",
            "failed_requests", "errors", "first_error", "versions",
            "client_cpu_seconds", "wall_seconds"):
    assert key in d, key
assert d["model"] == "tiny-cnn" and d["batching"] is True, d
assert d["input"] == "random tensor 3x16x16", d["input"]
assert d["concurrency"] == 4 and d["inputs_per_request"] == 1, d
assert d["failed_requests"] == 0 and d["errors"] == {}, (d["errors"], d["first_error"])
assert d["requests"] > 0 and d["inputs"] == d["requests"], d
assert d["requests_per_second"] > 0, d
lat = d["latency_ms"]
assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"], lat
v = d["versions"]
assert v["min"] == v["max"] == '"$LATEST"' and v["monotonic"] is True, v
'
fi
if run_json "$TMP/bench-off.json" bench predict tiny-cnn --duration=1 --warmup=0 \
  --concurrency=2 --batching=off --image="$DARK" --inputs_per_request=2; then
  check_json "bench predict --batching=off --image --inputs_per_request=2" \
    "$TMP/bench-off.json" '
assert d["batching"] is False and d["input"] == "image img00.png", d
assert d["failed_requests"] == 0 and d["requests"] > 0, d
assert d["inputs"] == 2 * d["requests"], d
'
fi
expect_error NOT_FOUND "bench predict: unknown model" bench predict no-such-model --duration=1

# The Python baseline of bench/predict/predict_bench.sh, on the downloaded checkpoint:
# it must answer the same Predict with the same classes.
PY_SERVER=$(cd "$(dirname "$0")/../.." && pwd)/tools/predict_server_py.py
if ctl models download tiny-cnn "$TMP/tiny-cnn.pt" >/dev/null 2>"$TMP/download.err"; then
  PY_PORT=$(free_port)
  "$PYTHON" "$PY_SERVER" "$TMP/tiny-cnn.pt" --port="$PY_PORT" --threads=1 \
    >"$TMP/py-server.log" 2>&1 &
  PY_SERVER_PID=$!
  ready=0
  for _ in $(seq 150); do
    if timeout 10 "$KAIZENCTL" --server="127.0.0.1:$PY_PORT" --timeout=5s models get tiny-cnn \
      >/dev/null 2>&1; then
      ready=1
      break
    fi
    kill -0 "$PY_SERVER_PID" 2>/dev/null || break
    sleep 0.2
  done
  if ((ready)) && timeout "$CALL_TIMEOUT" "$KAIZENCTL" --server="127.0.0.1:$PY_PORT" \
    --output=json predict tiny-cnn "$DARK" "$LIGHT" --top_k=2 >"$TMP/py-predict.json" 2>&1; then
    check_json "Python baseline server: same classes and probabilities as kaizen-server" \
      "$TMP/py-predict.json" '
import json
k = json.load(open("'"$TMP"'/predict.json"))
assert d["model"] == "tiny-cnn" and int(d["version"]) == int(k["version"]), (d["version"], k["version"])
for pp, kp in zip(d["predictions"], k["predictions"][:2]):
    assert [c["label"] for c in pp["classes"]] == [c["label"] for c in kp["classes"]], (pp, kp)
    for pc, kc in zip(pp["classes"], kp["classes"]):
        assert abs(pc["probability"] - kc["probability"]) < 1e-3, (pc, kc)
'
  else
    fail "Python baseline server did not answer Predict: $(tail -n 20 "$TMP/py-server.log" "$TMP/py-predict.json" 2>/dev/null)"
  fi
  kill -TERM "$PY_SERVER_PID" 2>/dev/null || true
  wait "$PY_SERVER_PID" 2>/dev/null || true
  PY_SERVER_PID=""
else
  fail "models download tiny-cnn: $(cat "$TMP/download.err")"
fi

# --- deletes ----------------------------------------------------------------
if out=$(ctl --output=json datasets delete photos 2>&1) && [[ $out == "{}" ]]; then
  pass "datasets delete prints {}"
else
  fail "datasets delete photos: $out"
fi
expect_error NOT_FOUND "deleted dataset is gone" datasets get photos
if out=$(ctl models delete r18 2>&1); then
  pass "models delete"
else
  fail "models delete r18: $out"
fi
expect_error NOT_FOUND "deleted model is gone" models get r18

echo "kaizenctl e2e: $PASSED passed, $FAILED failed"
((FAILED == 0))
