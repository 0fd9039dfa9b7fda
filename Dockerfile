# Kaizen server image: Debian 12 with the packages from scripts/setup.sh.
FROM debian:12 AS build
WORKDIR /src
COPY scripts/setup.sh scripts/setup.sh
RUN bash scripts/setup.sh
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DKAIZEN_BUILD_TESTS=OFF \
 && cmake --build build --target kaizen-server kaizen-model-inspector kaizenctl

FROM debian:12
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libtorch1.13 libopenblas0-openmp libgrpc++1.51 libprotobuf32 libabsl20220623 \
      libprometheus-cpp-pull1.0 libprometheus-cpp-core1.0 libsqlite3-0 libarchive13 \
      libjpeg62-turbo libpng16-16 libssl3 zlib1g libseccomp2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/kaizen-server /src/build/kaizen-model-inspector /src/build/kaizenctl \
     /usr/local/bin/
RUN useradd --system --uid 10001 kaizen && mkdir -p /data && chown kaizen /data
USER kaizen
ENV OMP_WAIT_POLICY=PASSIVE
VOLUME /data
EXPOSE 50051 9464
ENTRYPOINT ["/usr/local/bin/kaizen-server", "--data_dir=/data"]
