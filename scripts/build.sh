#!/usr/bin/env bash
# Configures and builds Kaizen (Release) into ./build. Usage: scripts/build.sh [targets...]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${KAIZEN_BUILD_DIR:-build}"
JOBS="${KAIZEN_JOBS:-$(nproc)}"
GENERATOR=()
if command -v ninja >/dev/null 2>&1; then GENERATOR=(-G Ninja); fi
# Configure when there is no cache, or when an interrupted configure left the
# cache without the generator's build file.
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ] ||
  { [ ${#GENERATOR[@]} -gt 0 ] && [ ! -f "$BUILD_DIR/build.ninja" ]; }; then
  cmake -S . -B "$BUILD_DIR" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=Release
fi
start=$(date +%s)
if [ $# -gt 0 ]; then
  for t in "$@"; do cmake --build "$BUILD_DIR" --target "$t" -j "$JOBS"; done
else
  cmake --build "$BUILD_DIR" -j "$JOBS"
fi
echo "build: done in $(( $(date +%s) - start )) s"
