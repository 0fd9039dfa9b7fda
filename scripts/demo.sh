#!/usr/bin/env bash
# The README's main job: install, build, start kaizen-server with embedded
# defaults (SQLite + ./kaizen-data) and walk through what it does with
# kaizenctl on Fashion-MNIST. The server keeps running afterwards so you can
# go on with kaizenctl; the script says how to stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
bash scripts/setup.sh
bash scripts/build.sh kaizen-server kaizenctl

BUILD="${KAIZEN_BUILD_DIR:-build}"
DATA_DIR="${KAIZEN_DATA_DIR:-$ROOT/kaizen-data}"
PORT="${KAIZEN_PORT:-50051}"
METRICS_PORT="${KAIZEN_METRICS_PORT:-9464}"
HTTP_PORT="${KAIZEN_HTTP_PORT:-8080}"
SERVER="127.0.0.1:$PORT"
CTL() { "$BUILD/kaizenctl" --server="$SERVER" "$@"; }
FASHION=/usr/share/datasets/fashion-mnist
CLASSES="t-shirt,trouser,pullover,dress,coat,sandal,shirt,sneaker,bag,ankle-boot"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if CTL datasets list >/dev/null 2>&1; then
  step "kaizen-server already answers on $SERVER; using it"
else
  step "Starting kaizen-server (data in $DATA_DIR, gRPC :$PORT, metrics :$METRICS_PORT, web console :$HTTP_PORT)"
  mkdir -p "$DATA_DIR"
  OMP_WAIT_POLICY=PASSIVE nohup "$BUILD/kaizen-server" --data_dir="$DATA_DIR" --grpc_port="$PORT" \
    --metrics_port="$METRICS_PORT" --http_port="$HTTP_PORT" >"$DATA_DIR/server.log" 2>&1 &
  echo $! >"$DATA_DIR/server.pid"
  for _ in $(seq 1 60); do
    CTL datasets list >/dev/null 2>&1 && break
    if ! kill -0 "$(cat "$DATA_DIR/server.pid")" 2>/dev/null; then
      echo "kaizen-server exited; its log:"; cat "$DATA_DIR/server.log"; exit 1
    fi
    sleep 0.5
  done
  CTL datasets list >/dev/null
fi

upload_idx() {  # name images-file
  if CTL datasets get "$1" >/dev/null 2>&1; then
    echo "dataset $1 already uploaded"
  else
    local t0=$(date +%s.%N)
    CTL datasets upload "$1" "$2" --class_names="$CLASSES"
    echo "uploaded $1 in $(echo "$(date +%s.%N) - $t0" | bc) s"
  fi
}

step "Uploading Fashion-MNIST (Debian's dataset-fashion-mnist)"
upload_idx fashion-train "$FASHION/train-images-idx3-ubyte.gz"
upload_idx fashion-test "$FASHION/t10k-images-idx3-ubyte.gz"

step "Uploading an image folder (PNG files written from the Fashion-MNIST test set)"
if ! CTL datasets get fashion-folder >/dev/null 2>&1; then
  FOLDER=$(mktemp -d)
  /usr/bin/python3 tools/make_image_folder.py "$FASHION" "$FOLDER" 20
  CTL datasets upload fashion-folder "$FOLDER"
  rm -rf "$FOLDER"
else
  echo "dataset fashion-folder already uploaded"
fi

step "Datasets"
CTL datasets list
step "Models (built-in architectures are available without an upload)"
CTL models list

# ---------------------------------------------------------------------------
# Fine-tuning walk-through: what pretraining buys in the few-shot regime
# (5 images per class: the regime where it should pay).
PRETRAIN_PER_CLASS="${KAIZEN_DEMO_PRETRAIN_PER_CLASS:-1200}"
PRETRAIN_EPOCHS="${KAIZEN_DEMO_PRETRAIN_EPOCHS:-4}"
TEST_PER_CLASS="${KAIZEN_DEMO_TEST_PER_CLASS:-200}"
FEW_PER_CLASS="${KAIZEN_DEMO_FEW_PER_CLASS:-5}"
INCREMENT_PER_CLASS="${KAIZEN_DEMO_INCREMENT_PER_CLASS:-100}"
DISTILL_EPOCHS="${KAIZEN_DEMO_DISTILL_EPOCHS:-3}"
SUBSETS=$(mktemp -d)
/usr/bin/python3 tools/make_fashion_subsets.py "$FASHION" "$SUBSETS" "$PRETRAIN_PER_CLASS" \
  "$TEST_PER_CLASS" "$FEW_PER_CLASS" "$INCREMENT_PER_CLASS"
upload_subset() {  # name file-prefix class-names
  if ! CTL datasets get "$1" >/dev/null 2>&1; then
    CTL datasets upload "$1" "$SUBSETS/$2-images" --format=idx --labels="$SUBSETS/$2-labels" \
      --class_names="$3" >/dev/null
  fi
  echo "dataset $1: $(CTL --output=json datasets get "$1" | /usr/bin/python3 -c \
    'import json,sys; print(json.load(sys.stdin)["numExamples"])') images"
}
OLD=t-shirt,trouser,pullover,dress,coat
NEW=sandal,shirt,sneaker,bag,ankle-boot
FEW="fm-new-$FEW_PER_CLASS"
step "Few-shot transfer: classes 0-4 (pretraining) -> classes 5-9 ($FEW_PER_CLASS images per class)"
upload_subset fm-old base "$OLD"
upload_subset "$FEW" few "$NEW"
upload_subset fm-new-test test "$NEW"

# Runs a job with a live progress bar unless its output model already exists.
finetune() {  # output base dataset strategy extra...
  local out=$1; shift
  if CTL models get "$out" >/dev/null 2>&1; then
    echo "model $out already trained"
    return
  fi
  CTL finetune start --output_model="$out" --base="$1" --dataset="$2" --strategy="$3" \
    "${@:4}" --watch
}
step "Pretraining resnet-small with SCRATCH on classes 0-4 ($((PRETRAIN_PER_CLASS * 5)) images, $PRETRAIN_EPOCHS epochs)"
finetune fm-base resnet-small fm-old scratch --epochs="$PRETRAIN_EPOCHS" --validation_split=0.1 --seed=1
# Each job names the test set: once it ends, its final versions are evaluated
# on it (never trained on, never used to choose) and the result is stored with
# each version.
for strategy in feature_extraction fine_tune scratch; do
  base=fm-base; [ "$strategy" = scratch ] && base=resnet-small
  out="$FEW-${strategy//_/-}"
  step "$strategy on $((FEW_PER_CLASS * 5)) images of classes 5-9, evaluated on $((TEST_PER_CLASS * 5)) test images"
  finetune "$out" "$base" "$FEW" "$strategy" --seed=1 --test_dataset=fm-new-test
done
step "Evaluating $FEW-fine-tune on the test set (kaizenctl models evaluate)"
CTL models evaluate "$FEW-fine-tune" fm-new-test

# The newest job that wrote model $1.
job_for() {
  CTL --output=json jobs list | /usr/bin/python3 -c '
import json, sys
jobs = [j for j in json.load(sys.stdin).get("jobs", []) if j["request"]["outputModel"] == sys.argv[1]]
print(max(jobs, key=lambda j: j["createTime"])["id"])' "$1"
}
# The part of `kaizenctl jobs get` from the line starting with $2 on.
job_section() { CTL jobs get "$(job_for "$1")" | sed -n "/^  $2:/,\$p"; }

# Incremental learning: the pretrained base learns the five other classes
# and is scored on all ten, with and without its protections against
# forgetting (a rehearsal memory of the old classes, chosen from fm-old,
# and distillation from the base's outputs).
step "Incremental learning: fm-base (classes 0-4) + classes 5-9 from $INCREMENT_PER_CLASS images each, evaluated on all 10 classes"
upload_subset fm-new-increment new "$NEW"
upload_subset fm-all-test alltest "$OLD,$NEW"
finetune fm-base-increment fm-base fm-new-increment incremental --seed=1 --test_dataset=fm-all-test
job_section fm-base-increment incremental
step "The same increment without rehearsal or distillation (plain fine-tuning on the new data)"
finetune fm-base-increment-plain fm-base fm-new-increment incremental --seed=1 \
  --no_rehearsal --no_distillation --test_dataset=fm-all-test
job_section fm-base-increment-plain incremental

# Distillation: the pretrained resnet-small teaches the smaller cnn-small the
# classes it knows; the job reports both side by side.
step "Distillation: fm-base (resnet-small) teaches cnn-small on classes 0-4 ($DISTILL_EPOCHS epochs)"
upload_subset fm-old-test oldtest "$OLD"
finetune fm-base-student cnn-small fm-old distill --teacher=fm-base --epochs="$DISTILL_EPOCHS" \
  --seed=1 --test_dataset=fm-old-test
job_section fm-base-student distillation

# ---------------------------------------------------------------------------
# Text: the same question for text classification. transformer-small learns
# 30 WordNet categories from their glosses (SCRATCH, with a SentencePiece
# tokenizer trained on those glosses), then 8 other categories from
# $TEXT_FEW_PER_CLASS glosses each, against the same architecture and
# tokenizer from fresh weights (SCRATCH from gl-base).
TEXT_PRETRAIN_PER_CLASS="${KAIZEN_DEMO_TEXT_PRETRAIN_PER_CLASS:-400}"
TEXT_FEW_PER_CLASS="${KAIZEN_DEMO_TEXT_FEW_PER_CLASS:-20}"
TEXT_TEST_PER_CLASS="${KAIZEN_DEMO_TEXT_TEST_PER_CLASS:-100}"
TEXT_FEW_EPOCHS="${KAIZEN_DEMO_TEXT_FEW_EPOCHS:-40}"
TEXTS=$(mktemp -d)
/usr/bin/python3 tools/make_wordnet_text_sets.py "$TEXTS" "$TEXT_PRETRAIN_PER_CLASS" \
  "$TEXT_FEW_PER_CLASS" "$TEXT_TEST_PER_CLASS"
upload_text() {  # name csv
  CTL datasets get "$1" >/dev/null 2>&1 || CTL datasets upload "$1" "$TEXTS/$2" >/dev/null
  echo "dataset $1: $(CTL --output=json datasets get "$1" | /usr/bin/python3 -c \
    'import json,sys; print(json.load(sys.stdin)["numExamples"])') texts"
}
GL_FEW="gl-few-$TEXT_FEW_PER_CLASS"
step "Text: WordNet glosses labelled by category (Debian's wordnet-base)"
upload_text gl-pretrain pretrain.csv
upload_text gl-pretrain-val pretrain-val.csv
upload_text "$GL_FEW" few.csv
upload_text gl-test test.csv
step "Pretraining transformer-small with SCRATCH on 30 categories (a tokenizer trained on their glosses first)"
finetune gl-base transformer-small gl-pretrain scratch --epochs=2 --max_length=64 --seed=1 \
  --validation_dataset=gl-pretrain-val
for strategy in feature_extraction full scratch; do
  step "$strategy from gl-base on $((TEXT_FEW_PER_CLASS * 8)) glosses of 8 other categories, evaluated on $((TEXT_TEST_PER_CLASS * 8)) test glosses"
  finetune "$GL_FEW-${strategy//_/-}" gl-base "$GL_FEW" "$strategy" --epochs="$TEXT_FEW_EPOCHS" \
    --seed=1 --test_dataset=gl-test
done
rm -rf "$TEXTS"
step "Predict with texts: $GL_FEW-full"
CTL predict "$GL_FEW-full" --texts "a large wild cat with a tawny coat" "to travel on foot over a long distance" \
  "the part of the leg between the knee and the ankle" --top_k=2

step "Predict: the newest checkpoint of $FEW-fine-tune on six test images"
SAMPLES=$(mktemp -d)
/usr/bin/python3 - "$SUBSETS" "$SAMPLES" "$NEW" <<'PYEOF'
import struct, sys
from PIL import Image
src, out, names = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
images = open(f"{src}/test-images", "rb").read()[16:]
labels = open(f"{src}/test-labels", "rb").read()[8:]
for i in range(0, 6 * 157, 157):
    Image.frombytes("L", (28, 28), images[i * 784:(i + 1) * 784]).save(f"{out}/{i:04d}-{names[labels[i]]}.png")
PYEOF
KAIZENCTL=$(cd "$BUILD" && pwd)/kaizenctl
(cd "$SAMPLES" && "$KAIZENCTL" --server="$SERVER" predict "$FEW-fine-tune" ./*.png --top_k=2)
rm -rf "$SAMPLES" "$SUBSETS"

step "Results"
/usr/bin/python3 - "$BUILD/kaizenctl" "$SERVER" <<'PYEOF'
import json, subprocess, sys
from datetime import datetime
ctl, server = sys.argv[1], sys.argv[2]
def kaizenctl(*args):
    return json.loads(subprocess.check_output([ctl, f"--server={server}", "--output=json", *args]))
jobs = kaizenctl("jobs", "list")
t = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))
few_shot = []
print(f"{'model':<30}{'strategy':<20}{'base':<19}{'dataset':<18}{'epochs':>7}{'accuracy':>10}{'time':>8}{'img/s':>8}")
for j in sorted(jobs.get("jobs", []), key=lambda j: j["createTime"]):
    if j["state"] != "JOB_STATE_SUCCEEDED": continue
    r, h = j["request"], j["history"]
    acc = h[-1].get("valAccuracy", 0) * 100
    test = None
    if r.get("testDataset"):  # few-shot models: the stored test-set evaluation
        latest = kaizenctl("models", "get", f"{r['outputModel']}:{j['latestVersion']}")
        test = latest.get("testEvaluation")
        acc = test.get("accuracy", 0) * 100 if test else float("nan")
    secs = (t(j["endTime"]) - t(j["startTime"])).total_seconds()
    ips = sum(e.get("samplesPerSecond", 0) for e in h) / max(1, len(h))
    strategy = r['strategy'].replace('STRATEGY_', '').lower()
    print(f"{r['outputModel']:<30}{strategy:<20}"
          f"{r['baseModel']:<19}{r['dataset']:<18}{len(h):>7}{acc:>9.1f}%{secs:>7.0f}s{ips:>8.0f}")
    if test:
        few_shot.append((strategy, r["dataset"], acc))
# The verdict comes from this run's own numbers: the best pretrained model
# against the from-scratch one trained on the same few-shot dataset.
for dataset in sorted({d for _, d, _ in few_shot}):
    scratch = [a for s, d, a in few_shot if d == dataset and s == "scratch"]
    pretrained = [(a, s) for s, d, a in few_shot if d == dataset and s != "scratch"]
    if not scratch or not pretrained:
        continue
    best, how = max(pretrained)
    gap = best - scratch[0]
    if gap >= 1.0:
        print(f"On {dataset}, pretraining paid: {how} reached {best:.1f}% against {scratch[0]:.1f}% "
              f"from scratch (+{gap:.1f} points).")
    elif gap <= -1.0:
        print(f"On {dataset}, pretraining did not pay in this run: from scratch reached "
              f"{scratch[0]:.1f}% against {best:.1f}% for {how} ({gap:.1f} points).")
    else:
        print(f"On {dataset}, pretrained ({how}, {best:.1f}%) and from scratch ({scratch[0]:.1f}%) "
              f"are within a point of each other in this run.")
# Incremental learning and distillation: what this run's jobs measured.
done = {j["request"]["outputModel"]: j for j in jobs.get("jobs", [])
        if j["state"] == "JOB_STATE_SUCCEEDED"}
pct = lambda r, k: 100 * float(r.get(k, 0))
inc = {m: done[m].get("incremental", {}) for m in ("fm-base-increment", "fm-base-increment-plain")
       if m in done and done[m].get("incremental", {}).get("oldExamples")}
for m, r in inc.items():
    print(f"{m}: all 10 classes {pct(r, 'allAccuracyAfter'):.1f}%; old classes "
          f"{pct(r, 'oldAccuracyBefore'):.1f}% -> {pct(r, 'oldAccuracyAfter'):.1f}% "
          f"(forgetting {pct(r, 'forgetting'):.1f} points); new classes {pct(r, 'newAccuracyAfter'):.1f}%.")
if len(inc) == 2:
    kept, plain = pct(inc["fm-base-increment"], "forgetting"), pct(inc["fm-base-increment-plain"], "forgetting")
    if plain - kept >= 1.0:
        print(f"Rehearsal and distillation cut forgetting from {plain:.1f} to {kept:.1f} points in this run.")
    else:
        print(f"Rehearsal and distillation did not cut forgetting in this run ({kept:.1f} points "
              f"against {plain:.1f} without them).")
d = done.get("fm-base-student", {}).get("distillation", {})
if d.get("testExamples"):
    t, s = pct(d, "teacherTestAccuracy"), pct(d, "studentTestAccuracy")
    tp, sp = int(d.get("teacherParameterCount", 0)), int(d.get("studentParameterCount", 0))
    tl, sl = float(d.get("teacherLatencyMs", 0)), float(d.get("studentLatencyMs", 0))
    line = (f"fm-base-student (cnn-small, {sp:,} parameters, {sp / max(1, tp):.2f} of the teacher's) "
            f"reached {s:.1f}% against the teacher's {t:.1f}% ({100 * s / max(t, 1e-9):.0f}% of it)")
    if tl > 0 and sl > 0:
        line += f"; one image's forward pass takes {sl:.2f} ms against {tl:.2f} ms"
    print(line + ".")
print("One run, one seed: bench/RESULTS.md has the table over seeds and images per class.")
PYEOF
echo "Accuracy: the pretraining jobs' own validation data (fm-base: a held-out 10%; gl-base: gl-pretrain-val); every other job's latest version on its test set: the few-shot jobs' on the $((TEST_PER_CLASS * 5)) test images of classes 5-9 (fm-new-test) or the $((TEXT_TEST_PER_CLASS * 8)) test glosses (gl-test), the increments' on the $((TEST_PER_CLASS * 10)) of all 10 classes (fm-all-test), the student's on the $((TEST_PER_CLASS * 5)) of classes 0-4 (fm-old-test)."


cat <<EOT

kaizen-server is running: gRPC on $SERVER, Prometheus metrics on http://127.0.0.1:$METRICS_PORT/metrics,
the web console (jobs, curves, models, datasets, predictions) on http://127.0.0.1:$HTTP_PORT/
Data directory: $DATA_DIR (log: $DATA_DIR/server.log)
Go on with:   $BUILD/kaizenctl --server=$SERVER datasets get fashion-train
Stop it with: kill \$(cat $DATA_DIR/server.pid)
EOT
