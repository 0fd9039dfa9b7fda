// Every Prometheus metric the server exports, defined in one place, with one
// registry exposed over HTTP at /metrics.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/metrics/metrics_http_server.h"

namespace kaizen::metrics {

class Metrics {
 public:
  // Serves /metrics on `host`:`port` (port 0 picks a free one); a negative
  // port keeps the registry without an HTTP endpoint.
  static absl::StatusOr<std::unique_ptr<Metrics>> Create(const std::string& host, int port);

  // kaizen_grpc_requests_total{method, code} and
  // kaizen_grpc_request_duration_seconds{method}.
  void RecordRequest(absl::string_view method, absl::string_view code, double seconds);
  // kaizen_upload_bytes_total{kind="dataset"|"model"}.
  void AddUploadBytes(absl::string_view kind, int64_t bytes);
  // kaizen_download_bytes_total.
  void AddDownloadBytes(int64_t bytes);

  // The HTTP port, or 0 without an endpoint.
  int port() const;
  prometheus::Registry& registry() { return *registry_; }

 private:
  Metrics();

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<MetricsHttpServer> http_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Histogram>* latency_;
  prometheus::Family<prometheus::Counter>* upload_bytes_;
  prometheus::Counter* download_bytes_;
};

}  // namespace kaizen::metrics
