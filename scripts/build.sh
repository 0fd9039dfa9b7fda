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
# The compiler is Debian's clang (scripts/setup.sh installs it, and libomp-dev
# for its omp.h) unless CC or CXX is set: its precompiled headers carry their
# template instantiations (-fpch-instantiate-templates, which CMake passes),
# while GCC 12 leaves them pending and every file compiled with its LibTorch
# header instantiates them again (7.3 s of an empty file's 8.2 s of CPU).
# README, "Compiler and build time". Where clang or its omp.h is missing, the
# build stays on CMake's default compiler and says so. A build folder keeps
# the compiler it was configured with.
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ] ||
  { [ ${#GENERATOR[@]} -gt 0 ] && [ ! -f "$BUILD_DIR/build.ninja" ]; }; then
  if [ -z "${CC:-}${CXX:-}" ]; then
    if command -v clang++ >/dev/null 2>&1 &&
      echo '#include <omp.h>' | clang++ -x c++ -fsyntax-only - >/dev/null 2>&1; then
      export CC=clang CXX=clang++
    else
      echo "build: clang++ or its omp.h (libomp-dev) is missing; CMake's default compiler builds" >&2
    fi
  fi
  cmake -S . -B "$BUILD_DIR" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=Release
fi
start=$(date +%s)
if [ $# -gt 0 ]; then
  for t in "$@"; do cmake --build "$BUILD_DIR" --target "$t" -j "$JOBS"; done
else
  cmake --build "$BUILD_DIR" -j "$JOBS"
fi
echo "build: done in $(( $(date +%s) - start )) s"
