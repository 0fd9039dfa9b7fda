# Kaizen server image (kaizen-server, kaizen-model-inspector, kaizen-tokenizer-trainer, kaizen-worker, kaizenctl), in
# two flavours chosen with --build-arg FLAVOR:
#
#   cpu (default): Debian 12 with Debian's LibTorch 1.13, the build the tests
#   run on.
#     docker build -t kaizen:0.1.0 .
#
#   cuda: Debian 12 with an official LibTorch 2.x CUDA build, which the build
#   cannot download: unzip it beforehand and pass the folder as the build
#   context "libtorch". CUDA_VERSION must be the CUDA version of that LibTorch.
#     unzip libtorch-cxx11-abi-shared-with-deps-2.5.1+cu124.zip -d /srv
#     docker build --build-arg FLAVOR=cuda --build-context libtorch=/srv/libtorch \
#       -t kaizen:0.1.0-cuda .
#
# Needs BuildKit (Docker's default builder since 23.0): it builds only the
# stages the chosen flavour uses. Both flavours keep every other library
# (gRPC, protobuf, Abseil, prometheus-cpp, ...) from Debian 12, the versions the
# tests run against; the CUDA flavour borrows only NVIDIA's CUDA toolkit, which
# LibTorch's CMake package needs to configure (nvcc, headers, libraries), from
# NVIDIA's image. The runtime image is Debian 12 either way, runs as uid 10001
# and writes only to /data (--data_dir) and /tmp.

ARG FLAVOR=cpu
ARG CUDA_VERSION=12.4
ARG CUDA_DEVEL_IMAGE=nvidia/cuda:12.4.1-devel-ubuntu22.04

# NVIDIA's CUDA toolkit; only the cuda flavour copies from it. Its Ubuntu 22.04
# binaries (glibc 2.35) run on Debian 12 (glibc 2.36), and CUDA 12.4's nvcc
# accepts Debian's GCC 12 as host compiler.
FROM ${CUDA_DEVEL_IMAGE} AS cuda-toolkit

# Stands in for `--build-context libtorch=DIR`, which replaces it; reached
# only when FLAVOR=cuda is built without one.
FROM debian:12 AS libtorch
RUN echo "FLAVOR=cuda needs --build-context libtorch=DIR, DIR an unzipped LibTorch" \
         "(DIR/share/cmake/Torch/TorchConfig.cmake)" >&2 && exit 1

# What both flavours build with: the build section of scripts/setup.sh without
# LibTorch (tests, benchmarks and fuzzing are not built here), and the
# compiler the tests' build uses, clang (scripts/build.sh says why).
FROM debian:12 AS build-deps
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      build-essential clang libomp-dev cmake ninja-build pkg-config ca-certificates \
      libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc \
      libabsl-dev prometheus-cpp-dev \
      libsqlite3-dev libarchive-dev libjpeg62-turbo-dev libexif-dev libpng-dev libssl-dev zlib1g-dev libisal-dev \
      libsentencepiece-dev libutf8proc-dev libseccomp-dev libboost-dev libgloo-dev libpq-dev \
 && rm -rf /var/lib/apt/lists/*
ENV CC=clang CXX=clang++
WORKDIR /src

FROM build-deps AS build-cpu
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libtorch-dev libopenblas0-openmp \
 && rm -rf /var/lib/apt/lists/*
ENV KAIZEN_CMAKE_ARGS=""

FROM build-deps AS build-cuda
ARG CUDA_VERSION
COPY --from=cuda-toolkit /usr/local/cuda-${CUDA_VERSION} /usr/local/cuda
COPY --from=libtorch / /opt/libtorch
# LibTorch's include folder may carry its own protobuf headers; ours are
# Debian's 3.21, which the generated code needs.
RUN if [ ! -f /opt/libtorch/share/cmake/Torch/TorchConfig.cmake ]; then \
      echo "--build-context libtorch=DIR: DIR/share/cmake/Torch/TorchConfig.cmake is missing" >&2; \
      exit 1; \
    fi \
 && rm -rf /opt/libtorch/include/google
# No GPU while building: name the architectures instead of letting LibTorch's
# CMake package probe for them (they matter only to CUDA sources, and Kaizen
# has none). nvcc keeps GCC as its host compiler: CUDAHOSTCXX for CMake's
# CUDA language (LibTorch's CMake package would otherwise give nvcc the C
# compiler, unset in this C++ project, when the C++ compiler is clang), and
# CUDA_HOST_COMPILER for LibTorch versions that still use FindCUDA.
ENV PATH=/usr/local/cuda/bin:${PATH} \
    CUDA_HOME=/usr/local/cuda \
    CUDAHOSTCXX=/usr/bin/g++ \
    TORCH_CUDA_ARCH_LIST="7.5;8.0;8.6;8.9;9.0" \
    KAIZEN_CMAKE_ARGS="-DCMAKE_PREFIX_PATH=/opt/libtorch -DCUDA_HOST_COMPILER=/usr/bin/gcc"

FROM build-${FLAVOR} AS build
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DKAIZEN_BUILD_TESTS=OFF \
      -DKAIZEN_BUILD_BENCH=OFF ${KAIZEN_CMAKE_ARGS} \
 && cmake --build build --target kaizen-server kaizen-model-inspector kaizen-tokenizer-trainer kaizen-worker kaizenctl
# The CUDA toolkit libraries the binaries link directly (cudart, nvrtc, ...;
# LibTorch's own copies carry other names), for the runtime image. libcuda.so.1
# is not among them: the NVIDIA container runtime mounts the driver's.
RUN mkdir -p /opt/cuda-runtime \
 && if [ -d /usr/local/cuda ]; then \
      ldd build/kaizen-server build/kaizen-model-inspector build/kaizen-tokenizer-trainer build/kaizen-worker build/kaizenctl \
        | awk '$3 ~ "^/usr/local/cuda/" {print $3}' | sort -u \
        | xargs -r cp -L -t /opt/cuda-runtime; \
    fi

# The web console (console/): built with Debian's Node.js and the npm
# packages its lock file names; the server serves the files from
# /usr/share/kaizen/console (--console_dir) on --http_port.
FROM debian:12 AS console
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      nodejs npm ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /console
COPY console/package.json console/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY console/ ./
RUN npm run build

# What both flavours run with.
FROM debian:12 AS runtime-base
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libgrpc++1.51 libprotobuf32 libabsl20220623 \
      libprometheus-cpp-pull1.0 libprometheus-cpp-core1.0 libsqlite3-0 libpq5 libarchive13 \
      libjpeg62-turbo libexif12 libpng16-16 libssl3 zlib1g libisal2 libsentencepiece0 libutf8proc2 \
      libseccomp2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*

FROM runtime-base AS runtime-cpu
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libtorch1.13 libopenblas0-openmp \
 && rm -rf /var/lib/apt/lists/*

FROM runtime-base AS runtime-cuda
# LibTorch's libraries (with the CUDA libraries it bundles) at the path the
# binaries were linked against, and the toolkit libraries collected above.
COPY --from=build /opt/libtorch/lib /opt/libtorch/lib
COPY --from=build /opt/cuda-runtime /opt/cuda-runtime
ENV LD_LIBRARY_PATH=/opt/libtorch/lib:/opt/cuda-runtime \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

FROM runtime-${FLAVOR}
# libkaizen_sentencepiece.so goes beside the binaries, where the tokenizer
# loader looks for it (server/text/sentencepiece_tokenizer.h).
COPY --from=build /src/build/kaizen-server /src/build/kaizen-model-inspector \
     /src/build/kaizen-tokenizer-trainer /src/build/kaizen-worker /src/build/kaizenctl \
     /src/build/libkaizen_sentencepiece.so /usr/local/bin/
COPY --from=console /console/dist /usr/share/kaizen/console
RUN groupadd --system --gid 10001 kaizen \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home kaizen \
 && mkdir -p /data && chown 10001:10001 /data
USER 10001:10001
# HOME=/tmp: with a read-only root filesystem, caches that LibTorch or the CUDA
# driver keep under $HOME land on /tmp (a tmpfs or emptyDir).
ENV OMP_WAIT_POLICY=PASSIVE HOME=/tmp
VOLUME /data
# gRPC, Prometheus /metrics, the plaintext health port (--health_port) the
# Kubernetes manifests use for the kubelet's probes, and the web console and
# JSON API (off unless --http_port=8080 is passed).
EXPOSE 50051 9464 8081 8080
ENTRYPOINT ["/usr/local/bin/kaizen-server", "--data_dir=/data", \
            "--console_dir=/usr/share/kaizen/console"]
