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
