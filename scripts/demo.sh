#!/usr/bin/env bash
# The README's main job: install, build, start kaizen-server with embedded
# defaults (SQLite + ./kaizen-data) and walk through what it does with
# kaizenctl on Fashion-MNIST. The server keeps running afterwards so you can
# go on with kaizenctl; the script says how to stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
bash scripts/setup.sh
bash scripts/build.sh kaizen-server kaizenctl

BUILD="${KAIZEN_BUILD_DIR:-build}"
DATA_DIR="${KAIZEN_DATA_DIR:-$ROOT/kaizen-data}"
PORT="${KAIZEN_PORT:-50051}"
METRICS_PORT="${KAIZEN_METRICS_PORT:-9464}"
SERVER="127.0.0.1:$PORT"
CTL() { "$BUILD/kaizenctl" --server="$SERVER" "$@"; }
FASHION=/usr/share/datasets/fashion-mnist
CLASSES="t-shirt,trouser,pullover,dress,coat,sandal,shirt,sneaker,bag,ankle-boot"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if CTL datasets list >/dev/null 2>&1; then
  step "kaizen-server already answers on $SERVER; using it"
else
  step "Starting kaizen-server (data in $DATA_DIR, gRPC :$PORT, metrics :$METRICS_PORT)"
  mkdir -p "$DATA_DIR"
  OMP_WAIT_POLICY=PASSIVE nohup "$BUILD/kaizen-server" --data_dir="$DATA_DIR" --grpc_port="$PORT" \
    --metrics_port="$METRICS_PORT" >"$DATA_DIR/server.log" 2>&1 &
  echo $! >"$DATA_DIR/server.pid"
  for _ in $(seq 1 60); do
    CTL datasets list >/dev/null 2>&1 && break
    if ! kill -0 "$(cat "$DATA_DIR/server.pid")" 2>/dev/null; then
      echo "kaizen-server exited; its log:"; cat "$DATA_DIR/server.log"; exit 1
    fi
    sleep 0.5
  done
  CTL datasets list >/dev/null
fi

upload_idx() {  # name images-file
  if CTL datasets get "$1" >/dev/null 2>&1; then
    echo "dataset $1 already uploaded"
  else
    local t0=$(date +%s.%N)
    CTL datasets upload "$1" "$2" --class_names="$CLASSES"
    echo "uploaded $1 in $(echo "$(date +%s.%N) - $t0" | bc) s"
  fi
}

step "Uploading Fashion-MNIST (Debian's dataset-fashion-mnist)"
upload_idx fashion-train "$FASHION/train-images-idx3-ubyte.gz"
upload_idx fashion-test "$FASHION/t10k-images-idx3-ubyte.gz"

step "Uploading an image folder (PNG files written from the Fashion-MNIST test set)"
if ! CTL datasets get fashion-folder >/dev/null 2>&1; then
  FOLDER=$(mktemp -d)
  /usr/bin/python3 scripts/make_image_folder.py "$FASHION" "$FOLDER" 20
  CTL datasets upload fashion-folder "$FOLDER"
  rm -rf "$FOLDER"
else
  echo "dataset fashion-folder already uploaded"
fi

step "Datasets"
CTL datasets list
step "Models (built-in architectures are available without an upload)"
CTL models list

cat <<EOT

kaizen-server is running: gRPC on $SERVER, Prometheus metrics on http://127.0.0.1:$METRICS_PORT/metrics
Data directory: $DATA_DIR (log: $DATA_DIR/server.log)
Go on with:   $BUILD/kaizenctl --server=$SERVER datasets get fashion-train
Stop it with: kill \$(cat $DATA_DIR/server.pid)
EOT
