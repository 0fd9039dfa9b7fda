#!/usr/bin/env bash
# Fails when a tracked C++ file differs from what clang-format makes of it
# (.clang-format: Google style, 100 columns). CTest runs it as format_check;
# `scripts/check_format.sh --fix` formats them in place.
set -euo pipefail
cd "$(dirname "$0")/.."
CF=$(command -v clang-format-14 || command -v clang-format || true)
[[ -n $CF ]] || { echo "check_format: clang-format is not installed (scripts/setup.sh installs it)" >&2; exit 1; }
mapfile -t files < <(git ls-files '*.h' '*.cc')
if [[ ${1:-} == --fix ]]; then
  "$CF" -i "${files[@]}"
  exit 0
fi
# One clang-format for all files (a process per file took most of the time);
# it names each file that differs in a "code should be clang-formatted" line.
report=$("$CF" --dry-run -Werror "${files[@]}" 2>&1 >/dev/null) && rc=0 || rc=$?
mapfile -t bad < <(sed -n 's/^\(.*\):[0-9]*:[0-9]*: error: code should be clang-formatted.*/\1/p' \
  <<<"$report" | sort -u)
if [[ $rc -ne 0 && ${#bad[@]} -eq 0 ]]; then
  echo "check_format: clang-format failed (exit $rc):" >&2
  sed -n 1,20p <<<"$report" >&2
  exit 1
fi
if [[ ${#bad[@]} -gt 0 ]]; then
  echo "check_format: ${#bad[@]} of ${#files[@]} files are not clang-formatted (fix: scripts/check_format.sh --fix):" >&2
  printf '  %s\n' "${bad[@]}" >&2
  exit 1
fi
echo "check_format: ${#files[@]} files formatted"
