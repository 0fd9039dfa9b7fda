#!/usr/bin/env bash
# Tests mirror the code: every unit (a .cc file) under server/ and client/
# has a unit test of the same name in the mirrored folder under tests/unit/,
#   server/<area>/<name>.cc -> tests/unit/<area>/<name>_test.cc
#   client/lib/<name>.cc    -> tests/unit/client/<name>_test.cc
#   client/cli/<name>.cc    -> tests/unit/cli/<name>_test.cc
# unless tests/untested_units.txt lists it with the test that covers it
# instead (wiring and gRPC edges, exercised end to end). Also: no test is
# DISABLED_ (experiments are benchmarks, in bench/), and the test helpers'
# namespace is not one that shadows GoogleTest's ::testing.
# Exits 1 listing every problem. CTest runs it as `test_layout`.
set -euo pipefail
cd "$(dirname "$0")/.."
exempt_file=tests/untested_units.txt
problems=()

declare -A exempt=()
while read -r unit covered_by _; do
  [[ -z $unit || $unit == \#* ]] && continue
  exempt[$unit]=$covered_by
  [[ -f $unit ]] || problems+=("$exempt_file lists $unit, which does not exist")
  [[ -e $covered_by ]] || problems+=("$exempt_file: $unit is said to be covered by $covered_by, which does not exist")
done <"$exempt_file"

mirror() {
  local unit=$1 name
  name=$(basename "$unit" .cc)
  case $unit in
    server/*) echo "tests/unit/$(dirname "${unit#server/}")/${name}_test.cc" ;;
    client/lib/*) echo "tests/unit/client/${name}_test.cc" ;;
    client/cli/*) echo "tests/unit/cli/${name}_test.cc" ;;
  esac
}

while read -r unit; do
  test_file=$(mirror "$unit")
  if [[ -n ${exempt[$unit]:-} ]]; then
    [[ -f $test_file ]] && problems+=("$unit has $test_file now: take it out of $exempt_file")
    continue
  fi
  [[ -f $test_file ]] || problems+=("$unit has no unit test $test_file (or a line in $exempt_file)")
done < <(git ls-files 'server/*.cc' 'client/*.cc' | grep -v '/main\.cc$\|_main\.cc$')

while read -r hit; do
  problems+=("a disabled test: $hit (an experiment belongs in bench/)")
done < <(git grep -n 'TEST[_FP]*(.*DISABLED_' -- tests || true)
while read -r hit; do
  problems+=("a namespace that shadows GoogleTest's ::testing: $hit")
done < <(git grep -nE 'namespace ([a-z_]+::)*testing\b' -- tests || true)

if ((${#problems[@]})); then
  printf '%s\n' "${problems[@]}" >&2
  echo "test layout: ${#problems[@]} problem(s)" >&2
  exit 1
fi
echo "test layout: every unit has its test or a listed end-to-end cover"
