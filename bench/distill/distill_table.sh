#!/usr/bin/env bash
# Issue 15's DISTILL numbers, through the service API. Per seed, on
# TRAIN_PER_CLASS Fashion-MNIST training images of each of the 10 classes
# (6,000: all of them):
#   - a teacher: TEACHER_ARCH (resnet-small) trained with SCRATCH for
#     TEACHER_EPOCHS;
#   - the student STUDENT_ARCH (cnn-small) trained on the labels alone
#     (SCRATCH) for EPOCHS at learning rate LR;
#   - the same student distilled from that teacher (DISTILL) with the same
#     epochs, learning rate, batch size and seed (the same budget), once per
#     entry of VARIANTS: "default" (Kaizen's alpha and temperature) or
#     "ALPHA:T".
# The jobs of a seed share its validation split (the seed chooses it), so
# each variant's last-epoch validation accuracy, printed beside the labels-only
# student's, is how to choose alpha and T without looking at the test set.
# Every job names TEST_PER_CLASS (1,000: all) test images of each class as its
# test_dataset; accuracy is the latest version's there (the server evaluates
# it once the job ends; nothing selects on it). Then Predict throughput of
# teacher and the first variant's student (all variants have the same
# architecture): `kaizenctl bench predict` at CONCURRENCY calls in flight for
# D seconds, ROUNDS rounds alternating teacher and student, median requests/s
# of each and the median of the per-round ratios.
#
# Usage: [SEEDS="1 2 3"] [TRAIN_PER_CLASS=6000] [TEST_PER_CLASS=1000]
#        [TEACHER_ARCH=resnet-small] [STUDENT_ARCH=cnn-small]
#        [TEACHER_EPOCHS=default] [EPOCHS=10] [LR=0.003] [CONCURRENCY=8] [D=10]
#        [ROUNDS=3] [VARIANTS="default 0.5:2"] bench/distill/distill_table.sh
# KAIZEN_BIN_DIR: prebuilt kaizen-server and kaizenctl (see bench/common.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/common.sh
SEEDS="${SEEDS:-1 2 3}"
TRAIN_PER_CLASS="${TRAIN_PER_CLASS:-6000}"
TEST_PER_CLASS="${TEST_PER_CLASS:-1000}"
TEACHER_ARCH="${TEACHER_ARCH:-resnet-small}"
STUDENT_ARCH="${STUDENT_ARCH:-cnn-small}"
TEACHER_EPOCHS="${TEACHER_EPOCHS:-}"
EPOCHS="${EPOCHS:-10}"
LR="${LR:-0.003}"
CONCURRENCY="${CONCURRENCY:-8}"
D="${D:-10}"
ROUNDS="${ROUNDS:-3}"
VARIANTS="${VARIANTS:-default}"
PY=/usr/bin/python3
bench_binaries distill_table
KEEP="${DISTILL_RESULTS:-bench/runs/history/distill_results.tsv}"
mkdir -p "$(dirname "$KEEP")"

bench_server

$PY - "$WORK" "$TRAIN_PER_CLASS" "$TEST_PER_CLASS" <<'PYEOF'
import sys
sys.path.insert(0, "tools")
from make_fashion_subsets import load, write
src = "/usr/share/datasets/fashion-mnist"
out, train_n, test_n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tr, trl = load(src, "train"); te, tel = load(src, "t10k")
print("train", write(out, "train", tr, trl, list(range(10)), train_n), "images", file=sys.stderr)
print("test", write(out, "test", te, tel, list(range(10)), test_n), "images", file=sys.stderr)
PYEOF
NAMES=t-shirt,trouser,pullover,dress,coat,sandal,shirt,sneaker,bag,ankle-boot
CTL datasets upload fm-train "$WORK/train-images" --format=idx --labels="$WORK/train-labels" --class_names=$NAMES >/dev/null
CTL datasets upload fm-test "$WORK/test-images" --format=idx --labels="$WORK/test-labels" --class_names=$NAMES >/dev/null

run_job() {  # output strategy base extra-args... ; prints the job id
  local out=$1 strategy=$2 base=$3; shift 3
  local id
  id=$(CTL --output=json finetune start --base="$base" --dataset=fm-train --output_model="$out" \
        --strategy="$strategy" --test_dataset=fm-test "$@" |
       $PY -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  CTL jobs watch "$id" >"$WORK/$out.watch" 2>&1 || { cat "$WORK/$out.watch" >&2; return 1; }
  echo "$id"
}
val_accuracy() {  # job id -> its last epoch's validation accuracy
  CTL --output=json jobs get "$1" | $PY -c '
import json, sys
print("%.4f" % json.load(sys.stdin)["history"][-1].get("valAccuracy", 0))'
}
test_accuracy() {  # job id -> the latest version's accuracy on fm-test
  CTL --output=json jobs get "$1" | $PY -c '
import json, subprocess, sys
j = json.load(sys.stdin)
m = json.loads(subprocess.check_output(sys.argv[1:] + ["--output=json", "models", "get",
    j["request"]["outputModel"] + ":" + j["latestVersion"]]))
print("%.4f" % m["testEvaluation"].get("accuracy", 0))' "$BUILD/kaizenctl" --server="127.0.0.1:$PORT"
}
rps() {  # model -> requests/s of one bench predict round
  CTL --output=json bench predict "$1" --concurrency="$CONCURRENCY" --duration="$D" --warmup=2 |
    $PY -c 'import json,sys; print(json.load(sys.stdin)["requests_per_second"])'
}

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
printf '# %s commit %s teacher %s student %s train %s test %s per class epochs %s lr %s\n' \
  "$(date -u +%FT%TZ)" "$(bench_commit)" "$TEACHER_ARCH" "$STUDENT_ARCH" "$TRAIN_PER_CLASS" \
  "$TEST_PER_CLASS" "$EPOCHS" "$LR" >>"$KEEP"
printf '# columns: seed teacher distilled labels-only teacher-params student-params teacher-req/s student-req/s ratio variant distilled-val labels-val\n' >>"$KEEP"
teacher_args=(); [ -n "$TEACHER_EPOCHS" ] && teacher_args=(--epochs="$TEACHER_EPOCHS")
for seed in $SEEDS; do
  echo "seed $seed: teacher ($TEACHER_ARCH, SCRATCH)..." >&2
  run_job "teacher-$seed" scratch "$TEACHER_ARCH" "${teacher_args[@]}" --seed="$seed" >/dev/null
  echo "seed $seed: student on labels alone, and distilled ($STUDENT_ARCH: $VARIANTS)..." >&2
  lid=$(run_job "labels-$seed" scratch "$STUDENT_ARCH" --epochs="$EPOCHS" --lr="$LR" --seed="$seed")
  labels_test=$(test_accuracy "$lid"); labels_val=$(val_accuracy "$lid")
  ratios=()
  for variant in $VARIANTS; do
    kd_args=(); tag=$variant
    if [ "$variant" != default ]; then
      kd_args=(--distill_alpha="${variant%%:*}" --temperature="${variant##*:}"); tag=${variant/:/-t}
    fi
    did=$(run_job "student-$seed-$tag" distill "$STUDENT_ARCH" --teacher="teacher-$seed" \
            "${kd_args[@]}" --epochs="$EPOCHS" --lr="$LR" --seed="$seed")
    if [ ${#ratios[@]} -eq 0 ]; then
      for round in $(seq 1 "$ROUNDS"); do
        t=$(rps "teacher-$seed"); s=$(rps "student-$seed-$tag")
        ratios+=("$t:$s")
      done
    fi
    CTL --output=json jobs get "$did" | $PY -c '
import json, statistics, sys
d = json.load(sys.stdin).get("distillation", {})
if not d.get("testExamples"):
    sys.exit("the DISTILL job has no test evaluation: " + json.dumps(d))
rounds = [tuple(map(float, r.split(":"))) for r in sys.argv[6:]]
print("\t".join([sys.argv[1], "%.4f" % float(d.get("teacherTestAccuracy", 0)),
                 "%.4f" % float(d.get("studentTestAccuracy", 0)), sys.argv[2],
                 str(d.get("teacherParameterCount", 0)), str(d.get("studentParameterCount", 0)),
                 "%.1f" % statistics.median(t for t, _ in rounds),
                 "%.1f" % statistics.median(s for _, s in rounds),
                 "%.2f" % statistics.median(s / t for t, s in rounds),
                 sys.argv[3], sys.argv[4], sys.argv[5]]))
' "$seed" "$labels_test" "$variant" "$(val_accuracy "$did")" "$labels_val" "${ratios[@]}" >>"$RESULTS"
    tail -1 "$RESULTS" >&2
    tail -1 "$RESULTS" >>"$KEEP"
  done
done

$PY - "$RESULTS" "$TEACHER_ARCH" "$STUDENT_ARCH" "$TRAIN_PER_CLASS" "$TEST_PER_CLASS" "$EPOCHS" \
  "$CONCURRENCY" <<'PYEOF'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
teacher, student, train_n, test_n, epochs, conc = sys.argv[2:8]
print(f"\nDistillation table: {teacher} teacher -> {student} student on {train_n} Fashion-MNIST "
      f"training images per class ({epochs} student epochs); accuracy on {test_n} test images per "
      f"class; Predict throughput at {conc} calls in flight (medians over rounds).")
def ms(vals):
    m = statistics.mean(vals)
    return m, (statistics.stdev(vals) if len(vals) > 1 else 0.0)
variants = list(dict.fromkeys(r[9] for r in rows))
val = {}
for variant in variants:
    vr = [r for r in rows if r[9] == variant]
    cols = [("teacher %", [100 * float(r[1]) for r in vr]),
            ("distilled %", [100 * float(r[2]) for r in vr]),
            ("labels only %", [100 * float(r[3]) for r in vr]),
            ("student/teacher acc", [float(r[2]) / max(float(r[1]), 1e-9) for r in vr]),
            ("params ratio", [int(r[5]) / max(1, int(r[4])) for r in vr]),
            ("teacher req/s", [float(r[6]) for r in vr]),
            ("student req/s", [float(r[7]) for r in vr]),
            ("throughput ratio", [float(r[8]) for r in vr]),
            ("distilled val %", [100 * float(r[10]) for r in vr]),
            ("labels only val %", [100 * float(r[11]) for r in vr])]
    print(f"\nvariant {variant} (alpha:T)\n")
    for name, vals in cols:
        m, s = ms(vals)
        print(f"{name:<22}{m:>10.3f} ±{s:7.3f}   per seed: {'  '.join('%.3f' % v for v in vals)}")
    acc_ratio, params, speed = ms(cols[3][1])[0], ms(cols[4][1])[0], ms(cols[7][1])[0]
    beats = ms(cols[1][1])[0] > ms(cols[2][1])[0]
    val[variant] = (ms(cols[8][1])[0], ms(cols[9][1])[0], ms(cols[1][1])[0], ms(cols[2][1])[0])
    print(f"\nstudent parameters {params:.2f} of the teacher's (target <= 0.25: "
          f"{'met' if params <= 0.25 else 'not met'}); accuracy {100 * acc_ratio:.1f}% of the "
          f"teacher's (target >= 97%: {'met' if acc_ratio >= 0.97 else 'not met'}); Predict "
          f"throughput {speed:.2f}x the teacher's (target >= 2: {'met' if speed >= 2 else 'not met'}); "
          f"the distilled student {'beats' if beats else 'does not beat'} the same student on "
          f"labels alone")
if len(variants) > 1:
    best = max(variants, key=lambda v: val[v][0])
    kd_val, labels_val, kd_test, labels_test = val[best]
    print(f"\nchosen on validation: {best} (mean validation accuracy {kd_val:.2f}% against "
          f"{labels_val:.2f}% on labels alone); its test accuracy {kd_test:.2f}% against "
          f"{labels_test:.2f}% on labels alone")
PYEOF
