#include "server/metrics/metrics.h"

#include <algorithm>
#include <cctype>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/time_util.h"
#include "server/common/failure_cause.h"
#include "server/metrics/device_info.h"
#include "server/metrics/process_stats.h"

#ifndef KAIZEN_VERSION
#define KAIZEN_VERSION "unknown"
#endif

namespace kaizen::metrics {

using kaizen::v1::Job;
using kaizen::v1::JobState;
using prometheus::Histogram;

namespace {

// Whole RPCs: sub-millisecond health checks to long WatchJob streams.
const Histogram::BucketBoundaries& GrpcBuckets() {
  static const auto* b = new Histogram::BucketBoundaries{
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600};
  return *b;
}
// Jobs: seconds (a failure at start) to a day.
const Histogram::BucketBoundaries& JobBuckets() {
  static const auto* b = new Histogram::BucketBoundaries{
      1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400};
  return *b;
}
// Checkpoint writes: a small model's file to a large model's fsync.
const Histogram::BucketBoundaries& CheckpointBuckets() {
  static const auto* b =
      new Histogram::BucketBoundaries{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
  return *b;
}

std::string EnumLabel(const std::string& name, absl::string_view prefix) {
  std::string out = name.empty() ? std::string("unspecified") : name;
  if (absl::StartsWith(out, prefix)) out.erase(0, prefix.size());
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// Every value of an enum but its zero (UNSPECIFIED) one.
template <typename Enum>
std::vector<Enum> EnumValues(const google::protobuf::EnumDescriptor* descriptor) {
  std::vector<Enum> out;
  for (int i = 0; i < descriptor->value_count(); ++i) {
    if (descriptor->value(i)->number() != 0) {
      out.push_back(static_cast<Enum>(descriptor->value(i)->number()));
    }
  }
  return out;
}

bool IsFinal(JobState state) {
  return state == kaizen::v1::JOB_STATE_SUCCEEDED || state == kaizen::v1::JOB_STATE_FAILED ||
         state == kaizen::v1::JOB_STATE_CANCELLED;
}

}  // namespace

absl::string_view GrpcCodeLabel(absl::StatusCode code) {
  static constexpr std::array<absl::string_view, 17> kNames = {
      "OK",       "Canceled",       "Unknown",          "InvalidArgument",   "DeadlineExceeded",
      "NotFound", "AlreadyExists",  "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
      "Aborted",  "OutOfRange",     "Unimplemented",    "Internal",          "Unavailable",
      "DataLoss", "Unauthenticated"};
  const int i = static_cast<int>(code);
  return i >= 0 && i < static_cast<int>(kNames.size()) ? kNames[i] : "Unknown";
}

std::string GrpcTypeLabel(absl::string_view service, absl::string_view method) {
  const google::protobuf::MethodDescriptor* m =
      google::protobuf::DescriptorPool::generated_pool()->FindMethodByName(
          absl::StrCat(service, ".", method));
  if (m == nullptr) return "unary";
  if (m->client_streaming() && m->server_streaming()) return "bidi_stream";
  if (m->client_streaming()) return "client_stream";
  if (m->server_streaming()) return "server_stream";
  return "unary";
}

const std::vector<absl::string_view>& JobFailureReasons() {
  static const auto* reasons = new std::vector<absl::string_view>{common::kCauseDiverged,
                                                                  common::kCauseAttemptsExhausted,
                                                                  "invalid_input",
                                                                  "missing_input",
                                                                  "resource_exhausted",
                                                                  "data_loss",
                                                                  "unimplemented",
                                                                  "internal",
                                                                  "other"};
  return *reasons;
}

absl::string_view JobFailureReason(const absl::Status& status) {
  if (std::optional<std::string> cause = common::CauseOf(status)) {
    for (absl::string_view r : JobFailureReasons()) {
      if (r == *cause) return r;
    }
  }
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return "invalid_input";
    case absl::StatusCode::kNotFound:
      return "missing_input";
    case absl::StatusCode::kResourceExhausted:
      return "resource_exhausted";
    case absl::StatusCode::kDataLoss:
      return "data_loss";
    case absl::StatusCode::kUnimplemented:
      return "unimplemented";
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
      return "internal";
    default:
      return "other";
  }
}

std::string StrategyLabel(kaizen::v1::Strategy strategy) {
  return EnumLabel(kaizen::v1::Strategy_Name(strategy), "STRATEGY_");
}

std::string JobStateLabel(JobState state) {
  return EnumLabel(kaizen::v1::JobState_Name(state), "JOB_STATE_");
}

// One method's series, made once: a call costs a map lookup, not a label
// hash per family.
struct Metrics::GrpcSeries {
  prometheus::Labels labels;  // grpc_type, grpc_service, grpc_method
  prometheus::Counter* started = nullptr;
  prometheus::Histogram* seconds = nullptr;
  // By code; made on first use (OK at once).
  std::array<std::atomic<prometheus::Counter*>, 17> handled{};
};

prometheus::Family<prometheus::Counter>& Metrics::AddCounter(const std::string& name,
                                                             const std::string& help) {
  families_.push_back({name, prometheus::MetricType::Counter});
  return prometheus::BuildCounter().Name(name).Help(help).Register(*registry_);
}

prometheus::Family<prometheus::Gauge>& Metrics::AddGauge(const std::string& name,
                                                         const std::string& help) {
  families_.push_back({name, prometheus::MetricType::Gauge});
  return prometheus::BuildGauge().Name(name).Help(help).Register(*registry_);
}

prometheus::Family<prometheus::Histogram>& Metrics::AddHistogram(const std::string& name,
                                                                 const std::string& help) {
  families_.push_back({name, prometheus::MetricType::Histogram});
  return prometheus::BuildHistogram().Name(name).Help(help).Register(*registry_);
}

Metrics::Metrics() : registry_(std::make_shared<prometheus::Registry>()) {
  AddGrpcMetrics();
  AddTransferAndServingMetrics();
  AddJobMetrics();
  AddProcessMetrics();
}

// gRPC, with go-grpc-prometheus's names, labels and help texts.
void Metrics::AddGrpcMetrics() {
  grpc_started_ =
      &AddCounter("grpc_server_started_total", "Total number of RPCs started on the server.");
  grpc_handled_ = &AddCounter(
      "grpc_server_handled_total",
      "Total number of RPCs completed on the server, regardless of success or failure.");
  grpc_seconds_ = &AddHistogram("grpc_server_handling_seconds",
                                "Histogram of response latency (seconds) of gRPC that had been "
                                "application-level handled by the server.");
}

// Uploads, downloads, credentials and the serving path.
void Metrics::AddTransferAndServingMetrics() {
  upload_bytes_ =
      &AddCounter("kaizen_upload_bytes_total", "Bytes received by successful uploads, by kind.");
  credential_reloads_ = &AddCounter(
      "kaizen_credential_reloads_total",
      "Re-reads of the tokens file (SIGHUP) and of changed TLS files, by kind and result; a "
      "failed one leaves the previous credentials in force.");
  for (const char* kind : {"tokens", "tls"}) {
    for (const char* result : {"ok", "failed"}) {
      credential_reloads_->Add({{"kind", kind}, {"result", result}});
    }
  }
  uploads_in_progress_ = &AddGauge("kaizen_uploads_in_progress",
                                   "Upload streams holding a slot (--max_concurrent_uploads).")
                              .Add({});
  download_bytes_ =
      &AddCounter("kaizen_download_bytes_total", "Model bytes streamed by DownloadModel.").Add({});

  batch_size_ = &AddHistogram("kaizen_inference_batch_size",
                              "Inputs per forward pass of the serving batcher, by model.");
  queue_seconds_ =
      &AddHistogram("kaizen_inference_queue_seconds",
                    "Time the oldest request of a batch waited in the queue, by model.");
  dropped_ = &AddCounter("kaizen_inference_dropped_total",
                         "Inference requests not computed, by model and reason.");
  queued_ = &AddGauge("kaizen_inference_queue_requests",
                      "Inference requests waiting in the serving queue, by model.");
  model_loads_ = &AddCounter("kaizen_model_loads_total",
                             "Model versions loaded for serving, by model and result (ok, failed, "
                             "deferred: written while the model was idle).");
  serving_version_ =
      &AddGauge("kaizen_model_serving_version", "The version of each model answering by default.");
}

// Jobs and training.
void Metrics::AddJobMetrics() {
  // Their series (labelled with the catalogue) appear at the first
  // SetJobCounts, which the server's collection hook calls before each scrape.
  jobs_ = &AddGauge("kaizen_jobs", "Fine-tuning jobs in the catalogue, by catalogue and state.");
  queue_depth_ = &AddGauge("kaizen_job_queue_depth",
                           "Fine-tuning jobs waiting to run (QUEUED), by catalogue.");
  queue_oldest_age_ = &AddGauge("kaizen_job_queue_oldest_age_seconds",
                                "Seconds since the catalogue's oldest queued job was created; 0 "
                                "with an empty queue.");
  job_seconds_ = &AddHistogram("kaizen_job_duration_seconds",
                               "Seconds from a job's first start to its end, by strategy and "
                               "final state.");
  job_failures_ = &AddCounter("kaizen_job_failures_total",
                              "Jobs that ended FAILED, by reason (see README.md#metrics).");
  for (absl::string_view r : JobFailureReasons()) job_failures_->Add({{"reason", std::string(r)}});
  job_resumes_ = &AddCounter("kaizen_job_resumes_total",
                             "Job runs that continued from a checkpoint (after a restart, a "
                             "shutdown or a requeue).")
                      .Add({});
  training_loss_ =
      &AddGauge("kaizen_training_loss", "Training loss of the last step of each running job.");
  training_samples_ = &AddGauge("kaizen_training_samples_per_second",
                                "Training images per second of each running job, in its current "
                                "epoch.");
  training_epoch_ =
      &AddGauge("kaizen_training_epoch", "The epoch each running job is in (from 1).");
  epochs_ = &AddCounter("kaizen_training_epochs_total", "Training epochs completed, by strategy.");
  for (auto s : EnumValues<kaizen::v1::Strategy>(kaizen::v1::Strategy_descriptor())) {
    epochs_->Add({{"strategy", StrategyLabel(s)}});
  }
  checkpoints_ =
      &AddCounter("kaizen_checkpoints_written_total", "Checkpoints written as new model versions.")
           .Add({});
  checkpoint_seconds_ = &AddHistogram("kaizen_checkpoint_write_seconds",
                                      "Seconds to write a checkpoint (model file, resume state, "
                                      "catalogue row).")
                             .Add({}, CheckpointBuckets());
}

// The process, in the names every Prometheus client library uses, the build
// and the GPU.
void Metrics::AddProcessMetrics() {
  cpu_seconds_ =
      &AddCounter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.")
           .Add({});
  resident_bytes_ =
      &AddGauge("process_resident_memory_bytes", "Resident memory size in bytes.").Add({});
  virtual_bytes_ =
      &AddGauge("process_virtual_memory_bytes", "Virtual memory size in bytes.").Add({});
  start_time_ = &AddGauge("process_start_time_seconds",
                          "Start time of the process since unix epoch in seconds.")
                     .Add({});
  open_fds_ = &AddGauge("process_open_fds", "Number of open file descriptors.").Add({});
  max_fds_ = &AddGauge("process_max_fds", "Maximum number of open file descriptors.").Add({});
  threads_ =
      &AddGauge("kaizen_process_threads", "Operating-system threads of the process.").Add({});
  AddGauge("kaizen_build_info",
           "Always 1; labels name the server version, the LibTorch version and the compute "
           "device (cpu or cuda).")
      .Add({{"version", KAIZEN_VERSION},
            {"libtorch", LibTorchVersion()},
            {"device", ComputeDevice()}})
      .Set(1);
  device_memory_ = &AddGauge("kaizen_device_memory_bytes",
                             "GPU memory held by live tensors, by device (CUDA caching "
                             "allocator); absent without a GPU.");
  device_reserved_ = &AddGauge("kaizen_device_memory_reserved_bytes",
                               "GPU memory reserved by the CUDA caching allocator (in use plus "
                               "cached), by device; absent without a GPU.");
}

Metrics::~Metrics() { http_.reset(); }

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Create(const std::string& host, int port,
                                                         MetricsHttpServer::Options http_options) {
  std::unique_ptr<Metrics> m(new Metrics());
  if (port >= 0) {
    Metrics* raw = m.get();
    absl::StatusOr<std::unique_ptr<MetricsHttpServer>> http = MetricsHttpServer::Start(
        host, port, [raw] { return raw->Collect(); }, http_options);
    if (!http.ok()) return http.status();
    m->http_ = *std::move(http);
  }
  return m;
}

Metrics::GrpcSeries* Metrics::GrpcSeriesFor(absl::string_view service, absl::string_view method) {
  const std::string key = absl::StrCat(service, "/", method);
  absl::MutexLock lock(&grpc_mu_);
  std::unique_ptr<GrpcSeries>& s = grpc_series_[key];
  if (!s) {
    s = std::make_unique<GrpcSeries>();
    s->labels = {{"grpc_type", GrpcTypeLabel(service, method)},
                 {"grpc_service", std::string(service)},
                 {"grpc_method", std::string(method)}};
    s->started = &grpc_started_->Add(s->labels);
    s->seconds = &grpc_seconds_->Add(s->labels, GrpcBuckets());
    prometheus::Labels ok = s->labels;
    ok["grpc_code"] = "OK";
    s->handled[0] = &grpc_handled_->Add(ok);
  }
  return s.get();
}

void Metrics::GrpcStarted(absl::string_view service, absl::string_view method) {
  GrpcSeriesFor(service, method)->started->Increment();
}

void Metrics::GrpcHandled(absl::string_view service, absl::string_view method,
                          absl::StatusCode code, double seconds) {
  GrpcSeries* s = GrpcSeriesFor(service, method);
  size_t i = static_cast<size_t>(code);
  if (i >= s->handled.size()) i = static_cast<size_t>(absl::StatusCode::kUnknown);
  prometheus::Counter* handled = s->handled[i].load();
  if (handled == nullptr) {
    prometheus::Labels labels = s->labels;
    labels["grpc_code"] = std::string(GrpcCodeLabel(static_cast<absl::StatusCode>(i)));
    // Family::Add returns the existing series for the same labels, so two
    // threads racing here store the same pointer.
    handled = &grpc_handled_->Add(labels);
    s->handled[i].store(handled);
  }
  handled->Increment();
  s->seconds->Observe(seconds);
}

absl::Status Metrics::InitializeGrpcService(absl::string_view service) {
  const google::protobuf::ServiceDescriptor* d =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(std::string(service));
  if (d == nullptr) {
    return absl::NotFoundError(absl::StrCat("no gRPC service \"", service, "\" is compiled in"));
  }
  for (int i = 0; i < d->method_count(); ++i) GrpcSeriesFor(service, d->method(i)->name());
  return absl::OkStatus();
}

void Metrics::SetUploadsInProgress(int64_t uploads) {
  uploads_in_progress_->Set(static_cast<double>(uploads));
}

void Metrics::CredentialReload(absl::string_view kind, bool ok) {
  credential_reloads_->Add({{"kind", std::string(kind)}, {"result", ok ? "ok" : "failed"}})
      .Increment();
}

void Metrics::AddUploadBytes(absl::string_view kind, int64_t bytes) {
  upload_bytes_->Add({{"kind", std::string(kind)}}).Increment(static_cast<double>(bytes));
}

void Metrics::AddDownloadBytes(int64_t bytes) {
  download_bytes_->Increment(static_cast<double>(bytes));
}

void Metrics::ObserveBatch(absl::string_view model, int64_t inputs, double queue_seconds) {
  static const Histogram::BucketBoundaries kSizes = {1, 2, 4, 8, 16, 32, 64, 128, 256};
  static const Histogram::BucketBoundaries kSeconds = {0.0001, 0.0005, 0.001, 0.002, 0.005,
                                                       0.01,   0.05,   0.1,   0.5,   1};
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
  // Both series from the first load on: a first failure after a success is
  // then an increase that rate() and increase() can see.
  prometheus::Counter& ok_count =
      model_loads_->Add({{"model", std::string(model)}, {"result", "ok"}});
  prometheus::Counter& failed_count =
      model_loads_->Add({{"model", std::string(model)}, {"result", "failed"}});
  (ok ? ok_count : failed_count).Increment();
}

void Metrics::ModelLoadDeferred(absl::string_view model) {
  model_loads_->Add({{"model", std::string(model)}, {"result", "deferred"}}).Increment();
}

void Metrics::SetServingVersion(absl::string_view model, int64_t version) {
  serving_version_->Add({{"model", std::string(model)}}).Set(static_cast<double>(version));
}

void Metrics::JobRunStarted(const Job& job) {
  if (job.latest_version() > 0) job_resumes_->Increment();
}

void Metrics::TrainingStep(const Job& job, const kaizen::v1::StepProgress& progress) {
  absl::MutexLock lock(&job_mu_);
  auto it = job_series_.find(job.id());
  if (it == job_series_.end()) {
    const prometheus::Labels labels = {{"job_id", job.id()},
                                       {"strategy", StrategyLabel(job.request().strategy())}};
    it = job_series_
             .emplace(job.id(),
                      JobSeries{&training_loss_->Add(labels), &training_samples_->Add(labels),
                                &training_epoch_->Add(labels)})
             .first;
  }
  it->second.loss->Set(progress.loss());
  it->second.samples_per_second->Set(progress.samples_per_second());
  it->second.epoch->Set(progress.epoch());
}

void Metrics::EpochCompleted(const Job& job) {
  epochs_->Add({{"strategy", StrategyLabel(job.request().strategy())}}).Increment();
}

void Metrics::CheckpointWritten(const Job& job, double seconds) {
  (void)job;
  checkpoints_->Increment();
  checkpoint_seconds_->Observe(seconds);
}

void Metrics::JobRunEnded(const Job& job, const absl::Status& status) {
  {
    absl::MutexLock lock(&job_mu_);
    auto it = job_series_.find(job.id());
    if (it != job_series_.end()) {
      training_loss_->Remove(it->second.loss);
      training_samples_->Remove(it->second.samples_per_second);
      training_epoch_->Remove(it->second.epoch);
      job_series_.erase(it);
    }
  }
  if (!IsFinal(job.state())) return;
  if (job.has_start_time() && job.has_end_time()) {
    using google::protobuf::util::TimeUtil;
    const double seconds =
        static_cast<double>(TimeUtil::TimestampToMilliseconds(job.end_time()) -
                            TimeUtil::TimestampToMilliseconds(job.start_time())) /
        1000.0;
    job_seconds_
        ->Add({{"strategy", StrategyLabel(job.request().strategy())},
               {"state", JobStateLabel(job.state())}},
              JobBuckets())
        .Observe(std::max(0.0, seconds));
  }
  if (job.state() == kaizen::v1::JOB_STATE_FAILED) {
    job_failures_->Add({{"reason", std::string(JobFailureReason(status))}}).Increment();
  }
}

void Metrics::SetJobCounts(const std::string& catalogue,
                           const std::map<JobState, int64_t>& jobs_by_state,
                           double oldest_queued_age_seconds) {
  const std::map<std::string, std::string> labels = {{"catalogue", catalogue}};
  // Every state the enum has, so that a new one appears without an edit here.
  for (JobState s : EnumValues<JobState>(kaizen::v1::JobState_descriptor())) {
    auto it = jobs_by_state.find(s);
    std::map<std::string, std::string> with_state = labels;
    with_state["state"] = JobStateLabel(s);
    jobs_->Add(with_state).Set(it == jobs_by_state.end() ? 0.0 : static_cast<double>(it->second));
  }
  auto queued = jobs_by_state.find(kaizen::v1::JOB_STATE_QUEUED);
  queue_depth_->Add(labels).Set(
      queued == jobs_by_state.end() ? 0.0 : static_cast<double>(queued->second));
  queue_oldest_age_->Add(labels).Set(std::max(0.0, oldest_queued_age_seconds));
}

void Metrics::SetCollectHook(std::function<void()> hook) {
  absl::MutexLock lock(&collect_mu_);
  collect_hook_ = std::move(hook);
}

void Metrics::RefreshProcessAndDevices() {
  if (absl::StatusOr<ProcessStats> p = ReadProcessStats(); p.ok()) {
    // A counter only goes up: add what the kernel counted since last time.
    cpu_seconds_->Increment(std::max(0.0, p->cpu_seconds - cpu_seconds_->Value()));
    resident_bytes_->Set(static_cast<double>(p->resident_bytes));
    virtual_bytes_->Set(static_cast<double>(p->virtual_bytes));
    start_time_->Set(p->start_time_seconds);
    open_fds_->Set(static_cast<double>(p->open_fds));
    max_fds_->Set(static_cast<double>(p->max_fds));
    threads_->Set(static_cast<double>(p->threads));
  }
  for (const DeviceMemory& d : ReadDeviceMemory()) {
    device_memory_->Add({{"device", d.device}}).Set(static_cast<double>(d.allocated_bytes));
    device_reserved_->Add({{"device", d.device}}).Set(static_cast<double>(d.reserved_bytes));
  }
}

std::vector<prometheus::MetricFamily> Metrics::Collect() {
  absl::MutexLock lock(&collect_mu_);
  RefreshProcessAndDevices();
  if (collect_hook_) collect_hook_();
  return registry_->Collect();
}

std::vector<std::string> Metrics::SampleNames() const {
  std::vector<std::string> out;
  for (const FamilyInfo& f : families_) {
    if (f.type == prometheus::MetricType::Histogram) {
      for (const char* suffix : {"_bucket", "_sum", "_count"}) out.push_back(f.name + suffix);
    } else {
      out.push_back(f.name);
    }
  }
  return out;
}

int Metrics::port() const { return http_ ? http_->port() : 0; }

}  // namespace kaizen::metrics
