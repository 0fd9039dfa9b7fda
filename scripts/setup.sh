#!/usr/bin/env bash
# Installs every Debian package Kaizen's build, tests and walk-through need.
# Idempotent: packages already present are left alone. Nothing is downloaded
# from anywhere but Debian's archive.
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build pkg-config git ca-certificates
  # LibTorch (CPU) and the BLAS it runs on; the OpenMP build of OpenBLAS shares
  # PyTorch's OpenMP pool instead of adding its own pthreads (see README).
  libtorch-dev libopenblas0-openmp
  # gRPC, protobuf and their code generators
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  # Abseil, Prometheus client, tests
  libabsl-dev prometheus-cpp-dev libgtest-dev libgmock-dev
  # storage and decoding
  libsqlite3-dev libarchive-dev libjpeg62-turbo-dev libexif-dev libpng-dev libssl-dev zlib1g-dev libisal-dev
  # text: SentencePiece tokenisation, and Unicode data for WordPiece's normalisation
  libsentencepiece-dev libutf8proc-dev
  # the catalogue on PostgreSQL (several API replicas): libpq, and the server
  # the tests start (tests/postgres/postgres.sh)
  libpq-dev postgresql
  # data-parallel training: Gloo's headers for LibTorch's ProcessGroupGloo
  libgloo-dev
  # the helpers' sandbox (seccomp filter of kaizen-model-inspector and
  # kaizen-tokenizer-trainer)
  libseccomp-dev
  # the JSON API over HTTP (server/http): Boost.Beast and Boost.Asio, header-only
  libboost-dev
  # TLS tests make a CA and certificates with the openssl command
  openssl
  # data and test fixtures
  dataset-fashion-mnist python3-torch python3-torchvision python3-numpy python3-pil bc
  # text fixtures: WordNet's glosses, and Python's sentencepiece as the tokenizer's reference
  wordnet-base python3-sentencepiece
  # benchmarks: the grpcio baseline server, accuracy through Predict, plots
  python3-grpcio python3-matplotlib
  # metrics: Debian's Prometheus server and promtool for the tests that scrape
  # a real server, lint /metrics and check the alerting rules (deploy/prometheus)
  prometheus
  # the compiler (scripts/build.sh) and fuzzing (scripts/fuzz.sh, the fuzz_build and
  # fuzz_smoke_* tests): clang, with libFuzzer and the sanitizer runtimes (a Recommends
  # of clang, so named here), and its omp.h (model_batcher.cc sets the OpenMP team size
  # of its threads; the functions are those of GCC's libgomp, which LibTorch runs on)
  clang libclang-rt-14-dev libomp-dev
  # the format check (scripts/check_format.sh, CTest format_check)
  clang-format
  # the web console's browser tests (tests/console): Debian's Chromium, driven
  # by playwright-core, and fonts for its screenshots
  chromium fonts-liberation
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# Tools of the Kubernetes manifest test (deploy/k8s/test/validate.sh):
# kubectl for kustomize, node and npm for the schema validators. Installed only
# where the command is missing: a kubectl or node from elsewhere (Google Cloud
# SDK, NodeSource) owns the same paths, and Debian's packages would conflict.
for tool in kubectl:kubernetes-client node:nodejs npm:npm; do
  if ! command -v "${tool%%:*}" >/dev/null 2>&1; then missing+=("${tool#*:}"); fi
done

if ((${#missing[@]})); then
  echo "setup: installing ${#missing[@]} Debian packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all Debian packages present"
fi

# npm packages at the versions of each package-lock.json, once per lock
# file: the web console's (console/), and Hugging Face's tokenizers, the
# reference the WordPiece tokenizer's tests compare with
# (tests/fixtures/wordpiece_reference/). Only the npm registry is reached.
root_dir="$(cd "$(dirname "$0")/.." && pwd)"
for npm_dir in console tests/fixtures/wordpiece_reference; do
  stamp="$root_dir/$npm_dir/node_modules/.kaizen-lock.sha256"
  lock_hash=$(sha256sum "$root_dir/$npm_dir/package-lock.json" | cut -d' ' -f1)
  if [[ ! -f $stamp || $(cat "$stamp") != "$lock_hash" ]]; then
    echo "setup: npm ci in $npm_dir/"
    (cd "$root_dir/$npm_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    echo "$lock_hash" >"$stamp"
  fi
done

# The web console's build into console/dist, which kaizen-server serves
# (--console_dir). A failure here leaves the API working and "/" saying why.
console_dir="$root_dir/console"
stale=""
if [[ -f $console_dir/dist/index.html ]]; then
  stale=$(find "$console_dir/src" "$console_dir/public" "$console_dir/index.html" "$console_dir/vite.config.js" \
    "$console_dir/package-lock.json" -type f -newer "$console_dir/dist/index.html" | head -1)
fi
if [[ ! -f $console_dir/dist/index.html || -n $stale ]]; then
  echo "setup: building the web console (vite) into console/dist"
  (cd "$console_dir" && npm run build --silent >/dev/null)
fi
