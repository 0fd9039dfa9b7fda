#!/usr/bin/env bash
# The web console end to end (CTest console_e2e): a kaizen-server process with
# tokens, its HTTP port and the built console, a real training job, and
# Debian's Chromium driven by playwright-core (console_test.mjs, node --test).
# Writes screenshots of the main pages to $KAIZEN_SCREENSHOT_DIR.
#
# Usage: run.sh BIN_DIR   (kaizen-server and kaizenctl)
# Exits 77 (CTest: skipped) when Chromium, node or the built console is missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
BIN_DIR=${1:?usage: run.sh BIN_DIR}
CHROMIUM=${KAIZEN_CHROMIUM:-/usr/bin/chromium}
CONSOLE_DIR=${KAIZEN_CONSOLE_DIR:-$root/console/dist}
FASHION_DIR=${KAIZEN_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}

skip() { echo "console e2e: skipped: $*"; exit 77; }
[[ -x $CHROMIUM ]] || skip "no Chromium at $CHROMIUM (scripts/setup.sh installs Debian's chromium)"
command -v node >/dev/null 2>&1 || skip "no node"
[[ -f $CONSOLE_DIR/index.html ]] || skip "the console is not built in $CONSOLE_DIR (scripts/setup.sh builds it)"

# playwright-core at the version of package-lock.json, once per lock file.
stamp="$here/node_modules/.kaizen-lock.sha256"
lock_hash=$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$lock_hash" ]]; then
  echo "console e2e: npm ci in tests/console"
  (cd "$here" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$lock_hash" >"$stamp"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/kaizen-console-e2e.XXXXXX")
trap 'rm -rf "$work"' EXIT
# 40 training images of each of Fashion-MNIST's classes 5-9, and one test
# image as a PNG for the predict playground.
/usr/bin/python3 "$root/tools/make_fashion_subsets.py" "$FASHION_DIR" "$work" 1 5 40 1
/usr/bin/python3 - "$FASHION_DIR" "$work/boot.png" <<'PY'
import gzip, sys
from PIL import Image
with gzip.open(f"{sys.argv[1]}/t10k-images-idx3-ubyte.gz") as f:
    images = f.read()[16:]
with gzip.open(f"{sys.argv[1]}/t10k-labels-idx1-ubyte.gz") as f:
    labels = f.read()[8:]
i = labels.index(9)  # the first ankle boot of the test split
Image.frombytes("L", (28, 28), images[i * 784:(i + 1) * 784]).save(sys.argv[2])
# A folder of class folders for the browser's uploads: four test images of
# each of two classes, and one file that is not an image.
import os
root = os.path.join(os.path.dirname(sys.argv[2]), "folder", "pets")
for label, name in ((5, "sandal"), (9, "boot")):
    os.makedirs(os.path.join(root, name))
    picks = [k for k, l in enumerate(labels) if l == label][:4]
    for n, k in enumerate(picks):
        Image.frombytes("L", (28, 28), images[k * 784:(k + 1) * 784]).save(
            os.path.join(root, name, f"{n}.png"))
with open(os.path.join(root, "sandal", "broken.png"), "wb") as f:
    f.write(b"not a png")
PY
tar -czf "$work/pets.tar.gz" -C "$work/folder" pets

export KAIZEN_SERVER="$BIN_DIR/kaizen-server" KAIZENCTL="$BIN_DIR/kaizenctl"
export KAIZEN_CONSOLE_DIR="$CONSOLE_DIR" KAIZEN_CHROMIUM="$CHROMIUM" KAIZEN_WORK="$work"
export KAIZEN_SCREENSHOT_DIR=${KAIZEN_SCREENSHOT_DIR:-$work/screenshots}
cd "$here"
node --test --test-reporter=spec console_test.mjs
