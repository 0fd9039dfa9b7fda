#include "server/metrics/metrics.h"


namespace kaizen::metrics {

Metrics::Metrics() : registry_(std::make_shared<prometheus::Registry>()) {
  requests_ = &prometheus::BuildCounter()
                   .Name("kaizen_grpc_requests_total")
                   .Help("gRPC requests handled, by method and status code.")
                   .Register(*registry_);
  latency_ = &prometheus::BuildHistogram()
                  .Name("kaizen_grpc_request_duration_seconds")
                  .Help("gRPC request handling time, by method.")
                  .Register(*registry_);
  upload_bytes_ = &prometheus::BuildCounter()
                       .Name("kaizen_upload_bytes_total")
                       .Help("Bytes received by successful uploads, by kind.")
                       .Register(*registry_);
  download_bytes_ = &prometheus::BuildCounter()
                         .Name("kaizen_download_bytes_total")
                         .Help("Model bytes streamed by DownloadModel.")
                         .Register(*registry_)
                         .Add({});
}

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Create(const std::string& host, int port) {
  std::unique_ptr<Metrics> m(new Metrics());
  if (port >= 0) {
    absl::StatusOr<std::unique_ptr<MetricsHttpServer>> http =
        MetricsHttpServer::Start(host, port, m->registry_);
    if (!http.ok()) return http.status();
    m->http_ = *std::move(http);
  }
  return m;
}

void Metrics::RecordRequest(absl::string_view method, absl::string_view code, double seconds) {
  requests_->Add({{"method", std::string(method)}, {"code", std::string(code)}}).Increment();
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 120};
  latency_->Add({{"method", std::string(method)}}, kBuckets).Observe(seconds);
}

void Metrics::AddUploadBytes(absl::string_view kind, int64_t bytes) {
  upload_bytes_->Add({{"kind", std::string(kind)}}).Increment(static_cast<double>(bytes));
}

void Metrics::AddDownloadBytes(int64_t bytes) {
  download_bytes_->Increment(static_cast<double>(bytes));
}

int Metrics::port() const { return http_ ? http_->port() : 0; }

}  // namespace kaizen::metrics
