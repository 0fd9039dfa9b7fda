#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang, ASan + UBSan, torch-free) into
# build-fuzz/ and runs each for a bounded time, one after another.
#
# Usage: scripts/fuzz.sh [--build-only | --no-build] [seconds_per_target] [target...]
#   --build-only        configure and build build-fuzz/, run nothing
#   --no-build          run the targets of an existing build-fuzz/ as they are
#   seconds_per_target  default 300 (CI's smoke tests pass 5, one test per target)
#   target              names from fuzz/CMakeLists.txt; default: all of them
# Env: KAIZEN_FUZZ_BUILD_DIR (build-fuzz), KAIZEN_JOBS (nproc),
#      KAIZEN_FUZZ_WORK (a temporary folder: grown corpora, crash files),
#      KAIZEN_FUZZ_PROTO_FROM (a clang build tree of these sources whose
#      generated protobuf code to link instead of compiling it; CTest passes
#      its own).
#
# Prints one line per target: executions, executions/s, corpus size and
# findings (crash/leak/timeout files). Exits 1 if any target found something;
# the inputs are kept under the work folder (reproduce: <fuzzer> <file>).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=1
RUN=1
case "${1:-}" in
  --build-only) RUN=0; shift ;;
  --no-build) BUILD=0; shift ;;
esac
SECONDS_PER_TARGET="${1:-300}"
shift || true
BUILD_DIR="${KAIZEN_FUZZ_BUILD_DIR:-build-fuzz}"
JOBS="${KAIZEN_JOBS:-$(nproc)}"
WORK="${KAIZEN_FUZZ_WORK:-$(mktemp -d -t kaizen-fuzz.XXXXXX)}"

if [ "$BUILD" = 1 ]; then
  if ! command -v clang++ >/dev/null 2>&1; then
    echo "fuzz: clang++ not found; scripts/setup.sh installs clang" >&2
    exit 2
  fi
  GENERATOR=()
  if command -v ninja >/dev/null 2>&1; then GENERATOR=(-G Ninja); fi
  PROTO_FROM=""
  if [ -n "${KAIZEN_FUZZ_PROTO_FROM:-}" ]; then
    PROTO_FROM=$(cd "$KAIZEN_FUZZ_PROTO_FROM" && pwd)
  fi
  # Configure when there is no cache or an interrupted configure left no
  # build file; reconfigure when the lender of the protobuf code changed.
  if [ ! -f "$BUILD_DIR/CMakeCache.txt" ] ||
    { [ ! -f "$BUILD_DIR/build.ninja" ] && [ ! -f "$BUILD_DIR/Makefile" ]; }; then
    CC=clang CXX=clang++ cmake -S . -B "$BUILD_DIR" "${GENERATOR[@]}" \
      -DCMAKE_BUILD_TYPE=Release -DKAIZEN_FUZZ=ON -DKAIZEN_BUILD_TESTS=OFF \
      -DKAIZEN_PROTO_FROM="$PROTO_FROM" >/dev/null
  elif ! grep -qxF "KAIZEN_PROTO_FROM:PATH=$PROTO_FROM" "$BUILD_DIR/CMakeCache.txt"; then
    cmake -S . -B "$BUILD_DIR" -DKAIZEN_PROTO_FROM="$PROTO_FROM" >/dev/null
  fi
  build_start=$(date +%s)
  cmake --build "$BUILD_DIR" -j "$JOBS"
  echo "fuzz: build done in $(( $(date +%s) - build_start )) s"
elif [ ! -f "$BUILD_DIR/fuzz_targets.txt" ]; then
  echo "fuzz: --no-build, but $BUILD_DIR holds no fuzz build (run with --build-only first)" >&2
  exit 2
fi
[ "$RUN" = 1 ] || exit 0

if [ $# -gt 0 ]; then TARGETS=("$@"); else mapfile -t TARGETS < "$BUILD_DIR/fuzz_targets.txt"; fi
# Leaks are findings too; UBSan stops at the first report.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

failed=0
printf '%-16s %8s %12s %10s %8s %9s\n' target seconds executions exec/s corpus findings
for t in "${TARGETS[@]}"; do
  [ -n "$t" ] || continue
  fuzzer="$BUILD_DIR/fuzz/${t}_fuzzer"
  corpus="$WORK/$t/corpus"
  artifacts="$WORK/$t/findings"
  rm -rf "$artifacts"
  mkdir -p "$corpus" "$artifacts"
  # Seeds are copied so that the checked-in corpus never changes.
  if [ -d "fuzz/corpus/$t" ]; then cp -n fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null || true; fi
  log="$WORK/$t/log.txt"
  start=$(date +%s)
  set +e
  "$fuzzer" "$corpus" -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 \
    -rss_limit_mb=2048 -timeout=20 -max_len=1048576 -artifact_prefix="$artifacts/" \
    >"$log" 2>&1
  rc=$?
  set -e
  took=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  findings=$(find "$artifacts" -type f | wc -l)
  size=$(find "$corpus" -type f | wc -l)
  printf '%-16s %8s %12s %10s %8s %9s\n' "$t" "$took" "${execs:-?}" "${rate:-?}" "$size" \
    "$findings"
  if [ "$rc" -ne 0 ] || [ "$findings" -gt 0 ]; then
    failed=1
    echo "fuzz: $t exited with $rc; findings in $artifacts; the end of its log:" >&2
    tail -40 "$log" >&2
  fi
done
echo "fuzz: work folder $WORK"
exit "$failed"
