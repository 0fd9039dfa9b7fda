# Shared by the benchmark runners (sourced, from the repository root).

# bench_commit: the short commit, with "-dirty" when tracked files other than
# the committed results (bench/RESULTS.md and the plots) differ from it.
bench_commit() {
  local commit
  commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  if [ -n "$(git status --porcelain --untracked-files=no -- . ':(exclude)bench/RESULTS.md' \
      ':(exclude)bench/*/*.png' 2>/dev/null)" ]; then commit="$commit-dirty"; fi
  echo "$commit"
}

# bench_binaries NAME: sets BUILD to the folder with kaizen-server and
# kaizenctl: $KAIZEN_BIN_DIR when set (prebuilt binaries, e.g. a copy that
# rebuilds of ./build do not disturb during a long run), else
# ${KAIZEN_BUILD_DIR:-build} after scripts/build.sh built them there. NAME
# (the benchmark) prefixes the error when one is missing.
bench_binaries() {
  BUILD="${KAIZEN_BUILD_DIR:-build}"
  if [ -n "${KAIZEN_BIN_DIR:-}" ]; then BUILD="$KAIZEN_BIN_DIR"
  else bash scripts/build.sh kaizen-server kaizenctl >/dev/null; fi
  local b
  for b in kaizen-server kaizenctl; do
    [ -x "$BUILD/$b" ] || { echo "$1: $BUILD/$b is missing" >&2; exit 1; }
  done
}

# bench_server: starts $BUILD/kaizen-server (bench_binaries first) with its
# data in a new temporary folder WORK, on a free loopback port PORT, without
# metrics, and waits until it answers; on exit it stops the server and
# removes WORK. CTL runs kaizenctl against it. $BENCH_SERVER_FLAGS (split on
# spaces) are added to the server's flags.
bench_server() {
  WORK=$(mktemp -d)
  PORT=$(/usr/bin/python3 -c \
    'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$BUILD/kaizen-server" --data_dir="$WORK/data" --host=127.0.0.1 --grpc_port="$PORT" \
    --metrics_port=-1 --threads="$(nproc)" --preload_models=false ${BENCH_SERVER_FLAGS:-} \
    >"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  trap 'kill $SERVER_PID 2>/dev/null; wait $SERVER_PID 2>/dev/null; rm -rf "$WORK"' EXIT
  local _
  for _ in $(seq 1 100); do CTL datasets list >/dev/null 2>&1 && break; sleep 0.2; done
}
CTL() { "$BUILD/kaizenctl" --server="127.0.0.1:$PORT" "$@"; }
