// Every Prometheus metric the server exports, defined in one place, with one
// registry exposed over HTTP at /metrics.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/metrics/metrics_http_server.h"

namespace kaizen::metrics {

class Metrics {
 public:
  // Serves /metrics on `host`:`port` (port 0 picks a free one); a negative
  // port keeps the registry without an HTTP endpoint.
  static absl::StatusOr<std::unique_ptr<Metrics>> Create(
      const std::string& host, int port, MetricsHttpServer::Options http_options = {});

  // kaizen_grpc_requests_total{method, code} and
  // kaizen_grpc_request_duration_seconds{method}.
  void RecordRequest(absl::string_view method, absl::string_view code, double seconds);
  // kaizen_upload_bytes_total{kind="dataset"|"model"}.
  void AddUploadBytes(absl::string_view kind, int64_t bytes);
  // kaizen_uploads_in_progress: upload streams holding a slot.
  void SetUploadsInProgress(int64_t uploads);
  // kaizen_download_bytes_total.
  void AddDownloadBytes(int64_t bytes);

  // Serving. kaizen_inference_batch_size{model} (inputs per forward pass)
  // and kaizen_inference_queue_seconds{model} (time the oldest request of
  // the batch waited).
  void ObserveBatch(absl::string_view model, int64_t inputs, double queue_seconds);
  // kaizen_inference_dropped_total{model, reason}: requests not computed
  // ("queue_full", "deadline", "cancelled", "shutdown").
  void InferenceDropped(absl::string_view model, absl::string_view reason);
  // kaizen_inference_queue_requests{model}: requests waiting in the queue.
  void SetQueuedRequests(absl::string_view model, int64_t requests);
  // kaizen_model_loads_total{model, result="ok"|"failed"}.
  void ModelLoaded(absl::string_view model, bool ok);
  // kaizen_model_serving_version{model}: the version answering by default.
  void SetServingVersion(absl::string_view model, int64_t version);

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
  prometheus::Gauge* uploads_in_progress_;
  prometheus::Counter* download_bytes_;
  prometheus::Family<prometheus::Histogram>* batch_size_;
  prometheus::Family<prometheus::Histogram>* queue_seconds_;
  prometheus::Family<prometheus::Counter>* dropped_;
  prometheus::Family<prometheus::Gauge>* queued_;
  prometheus::Family<prometheus::Counter>* model_loads_;
  prometheus::Family<prometheus::Gauge>* serving_version_;
};

}  // namespace kaizen::metrics
