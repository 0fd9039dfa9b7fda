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
  uploads_in_progress_ = &prometheus::BuildGauge()
                              .Name("kaizen_uploads_in_progress")
                              .Help("Upload streams holding a slot (--max_concurrent_uploads).")
                              .Register(*registry_)
                              .Add({});
  download_bytes_ = &prometheus::BuildCounter()
                         .Name("kaizen_download_bytes_total")
                         .Help("Model bytes streamed by DownloadModel.")
                         .Register(*registry_)
                         .Add({});
  batch_size_ = &prometheus::BuildHistogram()
                     .Name("kaizen_inference_batch_size")
                     .Help("Inputs per forward pass of the serving batcher, by model.")
                     .Register(*registry_);
  queue_seconds_ = &prometheus::BuildHistogram()
                        .Name("kaizen_inference_queue_seconds")
                        .Help("Time the oldest request of a batch waited in the queue, by model.")
                        .Register(*registry_);
  dropped_ = &prometheus::BuildCounter()
                  .Name("kaizen_inference_dropped_total")
                  .Help("Inference requests not computed, by model and reason.")
                  .Register(*registry_);
  queued_ = &prometheus::BuildGauge()
                 .Name("kaizen_inference_queue_requests")
                 .Help("Inference requests waiting in the serving queue, by model.")
                 .Register(*registry_);
  model_loads_ = &prometheus::BuildCounter()
                      .Name("kaizen_model_loads_total")
                      .Help("Model versions loaded for serving, by model and result.")
                      .Register(*registry_);
  serving_version_ = &prometheus::BuildGauge()
                          .Name("kaizen_model_serving_version")
                          .Help("The version of each model answering by default.")
                          .Register(*registry_);
}

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Create(const std::string& host, int port,
                                                         MetricsHttpServer::Options http_options) {
  std::unique_ptr<Metrics> m(new Metrics());
  if (port >= 0) {
    absl::StatusOr<std::unique_ptr<MetricsHttpServer>> http =
        MetricsHttpServer::Start(host, port, m->registry_, http_options);
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

void Metrics::SetUploadsInProgress(int64_t uploads) {
  uploads_in_progress_->Set(static_cast<double>(uploads));
}

void Metrics::AddUploadBytes(absl::string_view kind, int64_t bytes) {
  upload_bytes_->Add({{"kind", std::string(kind)}}).Increment(static_cast<double>(bytes));
}

void Metrics::AddDownloadBytes(int64_t bytes) {
  download_bytes_->Increment(static_cast<double>(bytes));
}

void Metrics::ObserveBatch(absl::string_view model, int64_t inputs, double queue_seconds) {
  static const prometheus::Histogram::BucketBoundaries kSizes = {1, 2, 4, 8, 16, 32, 64, 128, 256};
  static const prometheus::Histogram::BucketBoundaries kSeconds = {
      0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 0.5, 1};
  batch_size_->Add({{"model", std::string(model)}}, kSizes).Observe(static_cast<double>(inputs));
  queue_seconds_->Add({{"model", std::string(model)}}, kSeconds).Observe(queue_seconds);
}

void Metrics::InferenceDropped(absl::string_view model, absl::string_view reason) {
  dropped_->Add({{"model", std::string(model)}, {"reason", std::string(reason)}}).Increment();
}

void Metrics::SetQueuedRequests(absl::string_view model, int64_t requests) {
  queued_->Add({{"model", std::string(model)}}).Set(static_cast<double>(requests));
}

void Metrics::ModelLoaded(absl::string_view model, bool ok) {
  model_loads_->Add({{"model", std::string(model)}, {"result", ok ? "ok" : "failed"}}).Increment();
}

void Metrics::SetServingVersion(absl::string_view model, int64_t version) {
  serving_version_->Add({{"model", std::string(model)}}).Set(static_cast<double>(version));
}

int Metrics::port() const { return http_ ? http_->port() : 0; }

}  // namespace kaizen::metrics
