// Every Prometheus metric the server exports, defined in one place, with one
// registry exposed over HTTP at /metrics. README.md#metrics lists them with
// their meaning; deploy/prometheus/kaizen-alerts.yml and
// deploy/grafana/kaizen-dashboard.json use them (a test checks that every
// name they reference is registered here).
//
// gRPC:     grpc_server_started_total, grpc_server_handled_total,
//           grpc_server_handling_seconds (go-grpc-prometheus names and labels)
// jobs:     kaizen_jobs, kaizen_job_queue_depth, kaizen_job_queue_oldest_age_seconds,
//           kaizen_job_duration_seconds, kaizen_job_failures_total,
//           kaizen_job_resumes_total
// training: kaizen_training_loss, kaizen_training_samples_per_second,
//           kaizen_training_epoch, kaizen_training_epochs_total,
//           kaizen_checkpoints_written_total, kaizen_checkpoint_write_seconds
// serving:  kaizen_inference_batch_size, kaizen_inference_queue_seconds,
//           kaizen_inference_dropped_total, kaizen_inference_queue_requests,
//           kaizen_model_loads_total, kaizen_model_serving_version
// transfer: kaizen_upload_bytes_total, kaizen_uploads_in_progress,
//           kaizen_download_bytes_total
// process:  process_cpu_seconds_total, process_resident_memory_bytes,
//           process_virtual_memory_bytes, process_start_time_seconds,
//           process_open_fds, process_max_fds, kaizen_process_threads,
//           kaizen_build_info, kaizen_device_memory_bytes,
//           kaizen_device_memory_reserved_bytes
#pragma once

#include <array>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "kaizen/v1/finetune_service.pb.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"
#include "server/metrics/metrics_http_server.h"

namespace kaizen::metrics {

// A gRPC status code as go-grpc-prometheus spells it in grpc_code (the names
// of grpc-go's codes.Code: "OK", "Canceled", "InvalidArgument", ...).
absl::string_view GrpcCodeLabel(absl::StatusCode code);
// grpc_type of a method: "unary", "client_stream", "server_stream" or
// "bidi_stream", from its descriptor in the generated pool ("unary" for a
// method the pool does not know).
std::string GrpcTypeLabel(absl::string_view service, absl::string_view method);
// The reason label of kaizen_job_failures_total for a job that ended with
// `status`: one of JobFailureReasons(), from the status's cause
// (common::CauseOf) or else its code, never from its message.
absl::string_view JobFailureReason(const absl::Status& status);
const std::vector<absl::string_view>& JobFailureReasons();
// "fine_tune", "succeeded": enum value names without their prefix, lower case.
std::string StrategyLabel(kaizen::v1::Strategy strategy);
std::string JobStateLabel(kaizen::v1::JobState state);

class Metrics {
 public:
  struct FamilyInfo {
    std::string name;
    prometheus::MetricType type;
  };

  // Serves /metrics on `host`:`port` (port 0 picks a free one); a negative
  // port keeps the registry without an HTTP endpoint.
  static absl::StatusOr<std::unique_ptr<Metrics>> Create(
      const std::string& host, int port, MetricsHttpServer::Options http_options = {});
  ~Metrics();

  // gRPC, at the edge (api::RequestScope). grpc_server_started_total when a
  // call starts; grpc_server_handled_total{grpc_code} and
  // grpc_server_handling_seconds when it ends. `service` is the full name
  // ("kaizen.v1.InferenceService"), `method` the bare one ("Predict").
  void GrpcStarted(absl::string_view service, absl::string_view method);
  void GrpcHandled(absl::string_view service, absl::string_view method, absl::StatusCode code,
                   double seconds);
  // Creates the started, handled{grpc_code="OK"} and handling-seconds series
  // of every method of `service` at zero, so that rates and "nothing was
  // served" alerts work before the first call. NOT_FOUND for a service the
  // generated descriptor pool does not know.
  absl::Status InitializeGrpcService(absl::string_view service);

  // kaizen_credential_reloads_total{kind="tokens"|"tls", result="ok"|"failed"}:
  // re-reads of the tokens file (SIGHUP) and of changed TLS files.
  void CredentialReload(absl::string_view kind, bool ok);
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
  // kaizen_model_loads_total{model, result="ok"|"failed"}; both results of
  // a model exist from its first load on.
  void ModelLoaded(absl::string_view model, bool ok);
  // kaizen_model_loads_total{model, result="deferred"}: a version written
  // while the model was idle, left for its next request.
  void ModelLoadDeferred(absl::string_view model);
  // kaizen_model_serving_version{model}: the version answering by default.
  void SetServingVersion(absl::string_view model, int64_t version);

  // Training, from the job manager. A worker took `job`:
  // kaizen_job_resumes_total when it continues from a checkpoint.
  void JobRunStarted(const kaizen::v1::Job& job);
  // kaizen_training_{loss,samples_per_second,epoch}{job_id, strategy} of a
  // running job, after every step.
  void TrainingStep(const kaizen::v1::Job& job, const kaizen::v1::StepProgress& progress);
  // kaizen_training_epochs_total{strategy}.
  void EpochCompleted(const kaizen::v1::Job& job);
  // kaizen_checkpoints_written_total and kaizen_checkpoint_write_seconds.
  void CheckpointWritten(const kaizen::v1::Job& job, double seconds);
  // A run of `job` ended in job.state() with `status`: its per-job series
  // go. In a final state (succeeded, failed, cancelled) also
  // kaizen_job_duration_seconds{strategy, state} (start to end time) and,
  // when failed, kaizen_job_failures_total{reason}.
  void JobRunEnded(const kaizen::v1::Job& job, const absl::Status& status);
  // kaizen_jobs{state} for every JobState (zero for states absent from
  // `jobs_by_state`), kaizen_job_queue_depth and
  // kaizen_job_queue_oldest_age_seconds (0 with an empty queue).
  // Each is labelled `catalogue` (MetadataStore::catalogue_id): replicas on
  // one database report the same numbers under the same catalogue, so
  // dashboards take the max per catalogue before summing.
  void SetJobCounts(const std::string& catalogue,
                    const std::map<kaizen::v1::JobState, int64_t>& jobs_by_state,
                    double oldest_queued_age_seconds);

  // Runs before every collection (each scrape), on the HTTP server's thread,
  // to refresh what is computed from elsewhere (jobs by state from the
  // catalogue). Replaces the previous hook; nullptr removes it. Returns once
  // a collection in progress has finished, so that what the hook uses may
  // be destroyed after SetCollectHook(nullptr).
  void SetCollectHook(std::function<void()> hook);
  // Refreshes the process and device gauges, runs the hook, and returns
  // every family with its samples (what /metrics serves).
  std::vector<prometheus::MetricFamily> Collect();

  // Every family registered, whether it has samples yet or not.
  const std::vector<FamilyInfo>& families() const { return families_; }
  // The sample names those families can produce (histograms as _bucket,
  // _sum and _count).
  std::vector<std::string> SampleNames() const;

  // The HTTP port, or 0 without an endpoint.
  int port() const;
  prometheus::Registry& registry() { return *registry_; }

 private:
  struct GrpcSeries;
  struct JobSeries {
    prometheus::Gauge* loss;
    prometheus::Gauge* samples_per_second;
    prometheus::Gauge* epoch;
  };

  Metrics();
  // The constructor's parts: each registers one group of families.
  void AddGrpcMetrics();
  void AddTransferAndServingMetrics();
  void AddJobMetrics();
  void AddProcessMetrics();
  prometheus::Family<prometheus::Counter>& AddCounter(const std::string& name,
                                                      const std::string& help);
  prometheus::Family<prometheus::Gauge>& AddGauge(const std::string& name, const std::string& help);
  prometheus::Family<prometheus::Histogram>& AddHistogram(const std::string& name,
                                                          const std::string& help);
  GrpcSeries* GrpcSeriesFor(absl::string_view service, absl::string_view method);
  void RefreshProcessAndDevices() ABSL_EXCLUSIVE_LOCKS_REQUIRED(collect_mu_);

  std::shared_ptr<prometheus::Registry> registry_;
  std::vector<FamilyInfo> families_;

  prometheus::Family<prometheus::Counter>* grpc_started_;
  prometheus::Family<prometheus::Counter>* grpc_handled_;
  prometheus::Family<prometheus::Histogram>* grpc_seconds_;
  absl::Mutex grpc_mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<GrpcSeries>> grpc_series_
      ABSL_GUARDED_BY(grpc_mu_);

  prometheus::Family<prometheus::Counter>* upload_bytes_;
  prometheus::Family<prometheus::Counter>* credential_reloads_;
  prometheus::Gauge* uploads_in_progress_;
  prometheus::Counter* download_bytes_;
  prometheus::Family<prometheus::Histogram>* batch_size_;
  prometheus::Family<prometheus::Histogram>* queue_seconds_;
  prometheus::Family<prometheus::Counter>* dropped_;
  prometheus::Family<prometheus::Gauge>* queued_;
  prometheus::Family<prometheus::Counter>* model_loads_;
  prometheus::Family<prometheus::Gauge>* serving_version_;

  prometheus::Family<prometheus::Gauge>* jobs_;
  prometheus::Family<prometheus::Gauge>* queue_depth_;
  prometheus::Family<prometheus::Gauge>* queue_oldest_age_;
  prometheus::Family<prometheus::Histogram>* job_seconds_;
  prometheus::Family<prometheus::Counter>* job_failures_;
  prometheus::Counter* job_resumes_;
  prometheus::Family<prometheus::Gauge>* training_loss_;
  prometheus::Family<prometheus::Gauge>* training_samples_;
  prometheus::Family<prometheus::Gauge>* training_epoch_;
  prometheus::Family<prometheus::Counter>* epochs_;
  prometheus::Counter* checkpoints_;
  prometheus::Histogram* checkpoint_seconds_;
  absl::Mutex job_mu_;
  absl::flat_hash_map<std::string, JobSeries> job_series_ ABSL_GUARDED_BY(job_mu_);

  prometheus::Counter* cpu_seconds_;
  prometheus::Gauge* resident_bytes_;
  prometheus::Gauge* virtual_bytes_;
  prometheus::Gauge* start_time_;
  prometheus::Gauge* open_fds_;
  prometheus::Gauge* max_fds_;
  prometheus::Gauge* threads_;
  prometheus::Family<prometheus::Gauge>* device_memory_;
  prometheus::Family<prometheus::Gauge>* device_reserved_;

  absl::Mutex collect_mu_;
  std::function<void()> collect_hook_ ABSL_GUARDED_BY(collect_mu_);

  // Last: stopped first, while everything its scrapes read still exists.
  std::unique_ptr<MetricsHttpServer> http_;
};

}  // namespace kaizen::metrics
