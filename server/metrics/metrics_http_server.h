// Serves GET /metrics (Prometheus text format) on one thread: what a collect
// function returns at each request.
//
// Why not prometheus-cpp's pull Exposer: it runs on civetweb, which starts its
// threads with a small fixed stack; once LibTorch (with its large static TLS)
// is loaded, glibc refuses such threads (pthread_create: EINVAL) and the
// Exposer cannot start. Scrapes are rare and tiny, so one thread suffices: it
// multiplexes its connections with poll(), so that a slow or silent client
// delays nobody, and each connection has a whole-request deadline.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "prometheus/metric_family.h"

namespace kaizen::metrics {

class MetricsHttpServer {
 public:
  struct Options {
    // A connection must send its request and take the answer within this
    // long after it is accepted; then it is closed
    // (--metrics_request_timeout_seconds).
    absl::Duration request_timeout = absl::Seconds(5);
    // Connections served at once; more wait in the listen backlog
    // (--metrics_max_connections).
    int max_connections = 16;
  };

  // Called on the server's thread for every scrape.
  using CollectFn = std::function<std::vector<prometheus::MetricFamily>()>;

  // Binds `host:port` (port 0 picks a free one) and starts serving.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(const std::string& host, int port,
                                                                  CollectFn collect,
                                                                  Options options);
  ~MetricsHttpServer();

  int port() const { return port_; }

 private:
  struct Connection;

  MetricsHttpServer(int fd, int port, CollectFn collect, Options options);
  void Serve();
  // Reads what has arrived; once the request is whole, prepares the answer.
  // False when the connection is done with.
  bool OnReadable(Connection* c);
  // Sends what the socket takes. False when the connection is done with.
  bool OnWritable(Connection* c);
  std::string Respond(const std::string& request);

  int listen_fd_;
  int port_;
  CollectFn collect_;
  Options options_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace kaizen::metrics
