#!/usr/bin/env bash
# The README's test command: installs the Debian packages, builds everything
# from nothing (or incrementally), and runs every test suite with CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
cd "${KAIZEN_BUILD_DIR:-build}"
ctest --output-on-failure -j "${KAIZEN_TEST_JOBS:-2}" --timeout 900
