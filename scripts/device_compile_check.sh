#!/usr/bin/env bash
# Compiles every server source (-fsyntax-only) against another LibTorch, e.g.
# the CUDA LibTorch 2.x of the GPU machine, so that code written against
# Debian's LibTorch 1.13 keeps building there (DESIGN.md).
#
#   scripts/device_compile_check.sh prepare   # here, after scripts/build.sh:
#       gathers Debian's gRPC/protobuf/Abseil/... headers and the generated
#       protobuf headers into build/devcheck/ (about 14 MB)
#   scripts/device_compile_check.sh check     # on the GPU machine, with
#       build/devcheck carried along: finds torch through python3, compiles
#       with 16 jobs, prints the failures; results in $OUT (or /tmp/devcheck)
set -uo pipefail
cd "$(dirname "$0")/.."
BUNDLE=build/devcheck
case "${1:-}" in
prepare)
  rm -rf "$BUNDLE" && mkdir -p "$BUNDLE/include/google" "$BUNDLE/gen"
  cp -r /usr/include/absl /usr/include/grpcpp /usr/include/grpc /usr/include/grpc++ \
    /usr/include/prometheus /usr/include/openssl "$BUNDLE/include/"
  cp -r /usr/include/google/protobuf "$BUNDLE/include/google/"
  cp /usr/include/{archive.h,archive_entry.h,jerror.h,jmorecfg.h,jpeglib.h,png.h,pngconf.h} \
    /usr/include/{pnglibconf.h,sqlite3.h,seccomp.h,seccomp-syscalls.h,zlib.h,zconf.h} \
    /usr/include/x86_64-linux-gnu/jconfig.h "$BUNDLE/include/"
  cp /usr/include/x86_64-linux-gnu/openssl/*.h "$BUNDLE/include/openssl/"
  (cd build/gen && find . -name '*.h' -exec cp --parents {} "../devcheck/gen/" \;)
  du -sh "$BUNDLE"
  ;;
check)
  OUT=${OUT:-/tmp/devcheck}; mkdir -p "$OUT"
  PY=$(command -v python3 || command -v python)
  TORCH_INC=$($PY -c "import torch,os; print(os.path.join(os.path.dirname(torch.__file__),'include'))")
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())" | tee "$OUT/torch.txt"
  CUDA_INC=$(dirname "$(find / -name cuda_runtime_api.h -path '*include*' 2>/dev/null | head -1)")
  CXX=${CXX:-g++}; $CXX --version | head -1 | tee -a "$OUT/torch.txt"
  export CXX OUT FLAGS="-std=c++17 -fsyntax-only -w -DKAIZEN_WITH_CUDA=1 -DKAIZEN_VERSION=\"check\" -I. -I$BUNDLE/gen -I$BUNDLE/include -isystem $TORCH_INC -isystem $TORCH_INC/torch/csrc/api/include -isystem $CUDA_INC"
  ls server/*/*.cc | xargs -P 16 -I{} bash -c \
    'if $CXX $FLAGS "$1" 2> "$OUT/$(echo "$1" | tr / _).err"; then echo "ok $1"; else echo "FAIL $1"; fi' _ {} \
    | sort > "$OUT/compile.txt"
  find "$OUT" -name '*.err' -empty -delete
  echo "$(grep -c '^ok' "$OUT/compile.txt") compiled, $(grep -c '^FAIL' "$OUT/compile.txt") failed"
  for e in "$OUT"/*.err; do [[ -e $e ]] && { echo "== $e"; grep -m5 error "$e"; }; done
  ! grep -q '^FAIL' "$OUT/compile.txt"
  ;;
*) echo "usage: $0 prepare|check" >&2; exit 2 ;;
esac
