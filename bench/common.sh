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
