#!/usr/bin/env bash
# The soak test, longer than CI runs it: a real kaizen-server takes good and
# hostile uploads from several clients while it trains and serves Predict,
# and its peak RSS must stay under the bound in tests/e2e/soak_e2e_test.cc.
# Usage: scripts/soak.sh [seconds]   (default 600; CI runs 40)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh kaizen-server kaizen-model-inspector kaizen_e2e_test
KAIZEN_SOAK_SECONDS="${1:-600}" OMP_WAIT_POLICY=PASSIVE \
  "${KAIZEN_BUILD_DIR:-build}/kaizen_e2e_test" --gtest_filter='SoakE2E.*'
