// The metrics registry: gRPC series in go-grpc-prometheus's convention,
// training and job series with bounded labels, scrape-time refreshes, and
// an exposition that promtool's linter accepts.
#include "server/metrics/metrics.h"

#include <torch/cuda.h>
#include <torch/version.h>

#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"
#include "inference/grpc_service.pb.h"
#include "kaizen/v1/dataset_service.pb.h"
#include "kaizen/v1/inference_service.pb.h"
#include "kaizen/v1/model_service.pb.h"
#include "prometheus/text_serializer.h"
#include "server/common/failure_cause.h"
#include "tests/test_util/http_get.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::metrics {
namespace {

using kaizen::v1::Job;
using ::testing::HasSubstr;
using ::testing::Not;

// Generated descriptors are registered only when their object file is
// linked: name a message of every service file the tests look up.
void LinkServiceDescriptors() {
  (void)kaizen::v1::UploadDatasetRequest::descriptor();
  (void)kaizen::v1::DownloadModelRequest::descriptor();
  (void)kaizen::v1::PredictRequest::descriptor();
  (void)kaizen::v1::WatchJobRequest::descriptor();
  (void)inference::ModelInferRequest::descriptor();
}

std::unique_ptr<Metrics> NewMetrics() {
  LinkServiceDescriptors();
  auto m = Metrics::Create("127.0.0.1", -1);
  EXPECT_TRUE(m.ok()) << m.status();
  return *std::move(m);
}

std::string Scrape(Metrics& m) { return prometheus::TextSerializer().Serialize(m.Collect()); }

// The value of the sample written exactly as `sample` (name{labels}), or
// NaN when there is none.
double Sample(const std::string& body, const std::string& sample) {
  size_t at = 0;
  while ((at = body.find(sample + " ", at)) != std::string::npos) {
    if (at == 0 || body[at - 1] == '\n') return std::stod(body.substr(at + sample.size() + 1));
    ++at;
  }
  return std::nan("");
}

Job RunningJob(const std::string& id, kaizen::v1::Strategy strategy) {
  Job job;
  job.set_id(id);
  job.mutable_request()->set_strategy(strategy);
  job.set_state(kaizen::v1::JOB_STATE_RUNNING);
  *job.mutable_start_time() = google::protobuf::util::TimeUtil::SecondsToTimestamp(1000);
  return job;
}

TEST(GrpcLabels, CodesAreSpelledLikeGoGrpcPrometheus) {
  EXPECT_EQ(GrpcCodeLabel(absl::StatusCode::kOk), "OK");
  EXPECT_EQ(GrpcCodeLabel(absl::StatusCode::kCancelled), "Canceled");
  EXPECT_EQ(GrpcCodeLabel(absl::StatusCode::kInvalidArgument), "InvalidArgument");
  EXPECT_EQ(GrpcCodeLabel(absl::StatusCode::kDeadlineExceeded), "DeadlineExceeded");
  EXPECT_EQ(GrpcCodeLabel(absl::StatusCode::kNotFound), "NotFound");
  EXPECT_EQ(GrpcCodeLabel(absl::StatusCode::kResourceExhausted), "ResourceExhausted");
  EXPECT_EQ(GrpcCodeLabel(absl::StatusCode::kFailedPrecondition), "FailedPrecondition");
  EXPECT_EQ(GrpcCodeLabel(absl::StatusCode::kUnavailable), "Unavailable");
  EXPECT_EQ(GrpcCodeLabel(absl::StatusCode::kUnauthenticated), "Unauthenticated");
  EXPECT_EQ(GrpcCodeLabel(static_cast<absl::StatusCode>(99)), "Unknown");
}

TEST(GrpcLabels, TypesComeFromTheMethodDescriptors) {
  LinkServiceDescriptors();
  EXPECT_EQ(GrpcTypeLabel("kaizen.v1.DatasetService", "UploadDataset"), "client_stream");
  EXPECT_EQ(GrpcTypeLabel("kaizen.v1.ModelService", "DownloadModel"), "server_stream");
  EXPECT_EQ(GrpcTypeLabel("kaizen.v1.FineTuneService", "WatchJob"), "server_stream");
  EXPECT_EQ(GrpcTypeLabel("kaizen.v1.InferenceService", "Predict"), "unary");
  EXPECT_EQ(GrpcTypeLabel("inference.GRPCInferenceService", "ModelInfer"), "unary");
  EXPECT_EQ(GrpcTypeLabel("no.Such", "Method"), "unary");
}

TEST(MetricsTest, GrpcCallsAreCountedWhenStartedAndWhenHandled) {
  auto m = NewMetrics();
  const std::string labels =
      "grpc_method=\"Predict\",grpc_service=\"kaizen.v1.InferenceService\",grpc_type=\"unary\"";
  m->GrpcStarted("kaizen.v1.InferenceService", "Predict");
  m->GrpcStarted("kaizen.v1.InferenceService", "Predict");
  std::string body = Scrape(*m);
  // Started at once; nothing handled yet, but the OK series exists at zero.
  EXPECT_EQ(Sample(body, "grpc_server_started_total{" + labels + "}"), 2);
  EXPECT_EQ(Sample(body, "grpc_server_handled_total{grpc_code=\"OK\"," + labels + "}"), 0);
  m->GrpcHandled("kaizen.v1.InferenceService", "Predict", absl::StatusCode::kOk, 0.003);
  m->GrpcHandled("kaizen.v1.InferenceService", "Predict", absl::StatusCode::kInvalidArgument, 0.2);
  body = Scrape(*m);
  EXPECT_EQ(Sample(body, "grpc_server_handled_total{grpc_code=\"OK\"," + labels + "}"), 1);
  EXPECT_EQ(Sample(body, "grpc_server_handled_total{grpc_code=\"InvalidArgument\"," + labels + "}"),
            1);
  EXPECT_EQ(Sample(body, "grpc_server_handling_seconds_count{" + labels + "}"), 2);
  EXPECT_DOUBLE_EQ(Sample(body, "grpc_server_handling_seconds_sum{" + labels + "}"), 0.203);
  EXPECT_EQ(Sample(body, "grpc_server_handling_seconds_bucket{" + labels + ",le=\"0.005\"}"), 1);
  EXPECT_EQ(Sample(body, "grpc_server_handling_seconds_bucket{" + labels + ",le=\"+Inf\"}"), 2);
}

TEST(MetricsTest, InitializingAServiceCreatesEveryMethodAtZero) {
  auto m = NewMetrics();
  ASSERT_TRUE(m->InitializeGrpcService("kaizen.v1.DatasetService").ok());
  EXPECT_EQ(m->InitializeGrpcService("kaizen.v1.NoSuchService").code(),
            absl::StatusCode::kNotFound);
  const std::string body = Scrape(*m);
  for (const char* method : {"GetDataset", "ListDatasets", "DeleteDataset"}) {
    const std::string labels = absl::StrCat("grpc_method=\"", method,
                                            "\",grpc_service=\"kaizen.v1.DatasetService\","
                                            "grpc_type=\"unary\"");
    EXPECT_EQ(Sample(body, "grpc_server_started_total{" + labels + "}"), 0) << method;
    EXPECT_EQ(Sample(body, "grpc_server_handled_total{grpc_code=\"OK\"," + labels + "}"), 0);
  }
  EXPECT_EQ(Sample(body,
                   "grpc_server_started_total{grpc_method=\"UploadDataset\",grpc_service="
                   "\"kaizen.v1.DatasetService\",grpc_type=\"client_stream\"}"),
            0);
}

TEST(JobFailureReasonTest, ComesFromTheCauseOrTheCodeNeverTheMessage) {
  EXPECT_EQ(JobFailureReason(common::WithCause(absl::InvalidArgumentError("loss became NaN"),
                                               common::kCauseDiverged)),
            "diverged");
  EXPECT_EQ(
      JobFailureReason(common::WithCause(absl::AbortedError("x"), common::kCauseAttemptsExhausted)),
      "attempts_exhausted");
  EXPECT_EQ(JobFailureReason(absl::InvalidArgumentError("loss became NaN")), "invalid_input");
  EXPECT_EQ(JobFailureReason(absl::NotFoundError("dataset gone")), "missing_input");
  EXPECT_EQ(JobFailureReason(absl::ResourceExhaustedError("CUDA out of memory")),
            "resource_exhausted");
  EXPECT_EQ(JobFailureReason(absl::DataLossError("corrupt")), "data_loss");
  EXPECT_EQ(JobFailureReason(absl::InternalError("epoch 1 step 2: boom")), "internal");
  EXPECT_EQ(JobFailureReason(absl::UnavailableError("?")), "other");
  // An unknown cause falls back to the code.
  EXPECT_EQ(JobFailureReason(common::WithCause(absl::InternalError("x"), "made_up")), "internal");
  for (absl::string_view r : JobFailureReasons()) {
    EXPECT_FALSE(r.empty());
    EXPECT_EQ(r, absl::AsciiStrToLower(r));
  }
}

TEST(MetricsTest, RunningJobsHaveProgressSeriesThatGoWhenTheyEnd) {
  auto m = NewMetrics();
  Job job = RunningJob("ft-abc", kaizen::v1::STRATEGY_FINE_TUNE);
  kaizen::v1::StepProgress p;
  p.set_epoch(2);
  p.set_loss(0.75);
  p.set_samples_per_second(123.5);
  m->JobRunStarted(job);
  m->TrainingStep(job, p);
  p.set_loss(0.5);
  m->TrainingStep(job, p);
  m->EpochCompleted(job);
  m->CheckpointWritten(job, 0.04);
  const std::string labels = "{job_id=\"ft-abc\",strategy=\"fine_tune\"}";
  std::string body = Scrape(*m);
  EXPECT_EQ(Sample(body, "kaizen_training_loss" + labels), 0.5);
  EXPECT_EQ(Sample(body, "kaizen_training_samples_per_second" + labels), 123.5);
  EXPECT_EQ(Sample(body, "kaizen_training_epoch" + labels), 2);
  EXPECT_EQ(Sample(body, "kaizen_training_epochs_total{strategy=\"fine_tune\"}"), 1);
  EXPECT_EQ(Sample(body, "kaizen_training_epochs_total{strategy=\"scratch\"}"), 0);
  EXPECT_EQ(Sample(body, "kaizen_checkpoints_written_total"), 1);
  EXPECT_EQ(Sample(body, "kaizen_checkpoint_write_seconds_bucket{le=\"0.05\"}"), 1);
  EXPECT_EQ(Sample(body, "kaizen_job_resumes_total"), 0);

  // Back to the queue (a shutdown): the series go, nothing is final yet.
  job.set_state(kaizen::v1::JOB_STATE_QUEUED);
  m->JobRunEnded(job, absl::OkStatus());
  body = Scrape(*m);
  EXPECT_THAT(body, Not(HasSubstr("job_id=\"ft-abc\"")));
  EXPECT_THAT(body, Not(HasSubstr("kaizen_job_duration_seconds_count")));

  // Resumed from its checkpoint, then failed: one duration, one failure.
  job.set_state(kaizen::v1::JOB_STATE_RUNNING);
  job.set_latest_version(1);
  m->JobRunStarted(job);
  m->TrainingStep(job, p);
  job.set_state(kaizen::v1::JOB_STATE_FAILED);
  *job.mutable_end_time() = google::protobuf::util::TimeUtil::SecondsToTimestamp(1090);
  m->JobRunEnded(job, common::WithCause(absl::InvalidArgumentError("loss became NaN"),
                                        common::kCauseDiverged));
  body = Scrape(*m);
  EXPECT_THAT(body, Not(HasSubstr("job_id=\"ft-abc\"")));
  EXPECT_EQ(Sample(body, "kaizen_job_resumes_total"), 1);
  const std::string done = "state=\"failed\",strategy=\"fine_tune\"";
  EXPECT_EQ(Sample(body, "kaizen_job_duration_seconds_count{" + done + "}"), 1);
  EXPECT_EQ(Sample(body, "kaizen_job_duration_seconds_sum{" + done + "}"), 90);
  EXPECT_EQ(Sample(body, "kaizen_job_duration_seconds_bucket{" + done + ",le=\"60\"}"), 0);
  EXPECT_EQ(Sample(body, "kaizen_job_duration_seconds_bucket{" + done + ",le=\"120\"}"), 1);
  EXPECT_EQ(Sample(body, "kaizen_job_failures_total{reason=\"diverged\"}"), 1);
  // Every reason exists from the start, at zero.
  for (absl::string_view r : JobFailureReasons()) {
    if (r == "diverged") continue;
    EXPECT_EQ(Sample(body, absl::StrCat("kaizen_job_failures_total{reason=\"", r, "\"}")), 0) << r;
  }
}

// Every state of the enum, under the catalogue's name: two catalogues (two
// servers, or a server whose database was replaced) are told apart.
TEST(MetricsTest, JobsByStateCoverEveryStateOfTheEnumUnderTheCatalogue) {
  auto m = NewMetrics();
  m->SetJobCounts("c1", {{kaizen::v1::JOB_STATE_QUEUED, 3}, {kaizen::v1::JOB_STATE_SUCCEEDED, 7}},
                  42.5);
  m->SetJobCounts("c2", {{kaizen::v1::JOB_STATE_QUEUED, 1}}, 5);
  const std::string body = Scrape(*m);
  EXPECT_EQ(Sample(body, "kaizen_jobs{catalogue=\"c1\",state=\"queued\"}"), 3);
  EXPECT_EQ(Sample(body, "kaizen_jobs{catalogue=\"c1\",state=\"succeeded\"}"), 7);
  EXPECT_EQ(Sample(body, "kaizen_jobs{catalogue=\"c2\",state=\"queued\"}"), 1);
  EXPECT_EQ(Sample(body, "kaizen_jobs{catalogue=\"c2\",state=\"succeeded\"}"), 0);
  EXPECT_EQ(Sample(body, "kaizen_job_queue_depth{catalogue=\"c1\"}"), 3);
  EXPECT_EQ(Sample(body, "kaizen_job_queue_depth{catalogue=\"c2\"}"), 1);
  EXPECT_EQ(Sample(body, "kaizen_job_queue_oldest_age_seconds{catalogue=\"c1\"}"), 42.5);
  const google::protobuf::EnumDescriptor* states = kaizen::v1::JobState_descriptor();
  for (int i = 0; i < states->value_count(); ++i) {
    const auto state = static_cast<kaizen::v1::JobState>(states->value(i)->number());
    if (state == kaizen::v1::JOB_STATE_UNSPECIFIED) continue;
    EXPECT_FALSE(std::isnan(
        Sample(body, "kaizen_jobs{catalogue=\"c1\",state=\"" + JobStateLabel(state) + "\"}")))
        << states->value(i)->name();
  }
  EXPECT_THAT(body, Not(HasSubstr("state=\"unspecified\"")));
  // Nothing unlabelled is left from before the first count.
  EXPECT_THAT(body, Not(HasSubstr("\nkaizen_job_queue_depth ")));
}

TEST(MetricsTest, EachCollectionRefreshesTheProcessAndRunsTheHook) {
  auto m = NewMetrics();
  int hook_runs = 0;
  m->SetCollectHook([&] { ++hook_runs; });
  std::string body = Scrape(*m);
  EXPECT_EQ(hook_runs, 1);
  const double fds = Sample(body, "process_open_fds");
  const double cpu = Sample(body, "process_cpu_seconds_total");
  EXPECT_GT(fds, 2);
  EXPECT_GT(Sample(body, "process_resident_memory_bytes"), 1 << 20);
  EXPECT_GT(Sample(body, "process_virtual_memory_bytes"),
            Sample(body, "process_resident_memory_bytes"));
  EXPECT_GT(Sample(body, "process_max_fds"), fds);
  EXPECT_GE(Sample(body, "kaizen_process_threads"), 1);
  const double now = absl::ToUnixSeconds(absl::Now());
  const double started = Sample(body, "process_start_time_seconds");
  EXPECT_LE(started, now + 1);
  EXPECT_GT(started, now - 3600);

  FILE* extra = std::fopen("/proc/self/stat", "r");
  ASSERT_NE(extra, nullptr);
  // 100 ms of CPU time: ten of the kernel's clock ticks.
  const std::clock_t until = std::clock() + CLOCKS_PER_SEC / 10;
  volatile double sink = 0;
  while (std::clock() < until) sink = sink + std::sqrt(sink + 1.0);
  m->SetCollectHook(nullptr);
  body = Scrape(*m);
  std::fclose(extra);
  EXPECT_EQ(hook_runs, 1);
  EXPECT_EQ(Sample(body, "process_open_fds"), fds + 1);
  EXPECT_GT(Sample(body, "process_cpu_seconds_total"), cpu);
}

TEST(MetricsTest, BuildInfoNamesTheVersionLibTorchAndDevice) {
  auto m = NewMetrics();
  const std::string body = Scrape(*m);
  const std::string device = torch::cuda::is_available() ? "cuda" : "cpu";
  const std::string prefix = absl::StrCat("kaizen_build_info{device=\"", device, "\",libtorch=\"",
                                          TORCH_VERSION, "\",version=\"");
  const size_t at = body.find(prefix);
  ASSERT_NE(at, std::string::npos) << body;
  EXPECT_THAT(body.substr(at + prefix.size(), 6), ::testing::StartsWith("0."));
  EXPECT_NE(body.find("\"} 1\n", at), std::string::npos);
  if (!torch::cuda::is_available()) {
    // No GPU: no device memory series.
    EXPECT_THAT(body, Not(HasSubstr("kaizen_device_memory_bytes{")));
  } else {
    EXPECT_THAT(body, HasSubstr("kaizen_device_memory_bytes{device=\"cuda:0\"}"));
  }
}

TEST(MetricsTest, ModelLoadFailuresHaveASeriesFromTheFirstLoad) {
  auto m = NewMetrics();
  m->ModelLoaded("pets", true);
  const std::string body = Scrape(*m);
  EXPECT_EQ(Sample(body, "kaizen_model_loads_total{model=\"pets\",result=\"ok\"}"), 1);
  EXPECT_EQ(Sample(body, "kaizen_model_loads_total{model=\"pets\",result=\"failed\"}"), 0);
}

TEST(MetricsTest, SampleNamesCoverEveryFamilyAndHistogramSuffixes) {
  auto m = NewMetrics();
  const std::vector<std::string> names = m->SampleNames();
  auto has = [&](const std::string& n) {
    return std::find(names.begin(), names.end(), n) != names.end();
  };
  EXPECT_TRUE(has("grpc_server_started_total"));
  EXPECT_TRUE(has("grpc_server_handling_seconds_bucket"));
  EXPECT_TRUE(has("grpc_server_handling_seconds_count"));
  EXPECT_FALSE(has("grpc_server_handling_seconds"));
  EXPECT_TRUE(has("kaizen_jobs"));
  EXPECT_TRUE(has("kaizen_device_memory_bytes"));
  EXPECT_FALSE(has("kaizen_grpc_requests_total"));
  // Every family name is unique and in the exposition's character set.
  std::set<std::string> seen;
  for (const Metrics::FamilyInfo& f : m->families()) {
    EXPECT_TRUE(seen.insert(f.name).second) << f.name;
    for (char c : f.name) EXPECT_TRUE(std::islower(c) || std::isdigit(c) || c == '_') << f.name;
  }
}

TEST(MetricsTest, ServesTheRegistryOverHttp) {
  LinkServiceDescriptors();
  auto m = Metrics::Create("127.0.0.1", 0);
  ASSERT_TRUE(m.ok()) << m.status();
  int hook_runs = 0;
  (*m)->SetCollectHook([&] { ++hook_runs; });
  (*m)->GrpcStarted("kaizen.v1.InferenceService", "Predict");
  const std::string response = test_util::HttpGet((*m)->port(), "/metrics");
  EXPECT_THAT(response, HasSubstr("HTTP/1.1 200 OK"));
  EXPECT_THAT(response, HasSubstr("grpc_server_started_total{grpc_method=\"Predict\""));
  EXPECT_THAT(response, HasSubstr("process_resident_memory_bytes "));
  (*m)->SetCollectHook(nullptr);
  EXPECT_EQ(hook_runs, 1);
}

// Runs promtool (Debian's prometheus package) over an exposition with every
// kind of series present; its linter fails on names, help texts and units
// that do not follow Prometheus's conventions.
TEST(MetricsTest, PromtoolAcceptsTheExposition) {
  if (std::system("command -v promtool > /dev/null 2>&1") != 0) {
    GTEST_SKIP() << "promtool is not installed (scripts/setup.sh installs prometheus)";
  }
  auto m = NewMetrics();
  for (const char* svc : {"kaizen.v1.DatasetService", "kaizen.v1.InferenceService"}) {
    ASSERT_TRUE(m->InitializeGrpcService(svc).ok());
  }
  m->GrpcHandled("kaizen.v1.InferenceService", "Predict", absl::StatusCode::kNotFound, 0.1);
  Job job = RunningJob("ft-1", kaizen::v1::STRATEGY_SCRATCH);
  kaizen::v1::StepProgress p;
  p.set_epoch(1);
  p.set_loss(1.5);
  m->TrainingStep(job, p);
  m->EpochCompleted(job);
  m->CheckpointWritten(job, 0.2);
  m->ObserveBatch("pets", 4, 0.001);
  m->InferenceDropped("pets", "deadline");
  m->SetQueuedRequests("pets", 0);
  m->ModelLoaded("pets", true);
  m->SetServingVersion("pets", 3);
  m->AddUploadBytes("dataset", 100);
  m->AddDownloadBytes(10);
  m->SetJobCounts("c1", {{kaizen::v1::JOB_STATE_RUNNING, 1}}, 0);
  test_util::TempDir dir;
  const std::string path = dir.File("scrape.txt");
  {
    std::ofstream out(path);
    out << Scrape(*m);
  }
  const std::string report = dir.File("promtool.txt");
  const int rc =
      std::system(absl::StrCat("promtool check metrics < ", path, " > ", report, " 2>&1").c_str());
  std::ifstream in(report);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(rc, 0) << text;
}

}  // namespace
}  // namespace kaizen::metrics
