// Serves GET /metrics (Prometheus text format) from a registry on one thread.
//
// Why not prometheus-cpp's pull Exposer: it runs on civetweb, which starts its
// threads with a small fixed stack; once LibTorch (with its large static TLS)
// is loaded, glibc refuses such threads (pthread_create: EINVAL) and the
// Exposer cannot start. Scrapes are rare and tiny, so one thread suffices.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "prometheus/registry.h"

namespace kaizen::metrics {

class MetricsHttpServer {
 public:
  // Binds `host:port` (port 0 picks a free one) and starts serving.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& host, int port, std::shared_ptr<prometheus::Registry> registry);
  ~MetricsHttpServer();

  int port() const { return port_; }

 private:
  MetricsHttpServer(int fd, int port, std::shared_ptr<prometheus::Registry> registry);
  void Serve();
  void HandleConnection(int fd);

  int listen_fd_;
  int port_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace kaizen::metrics
