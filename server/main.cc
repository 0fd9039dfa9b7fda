// kaizen-server: flags, signal handling and the server's lifetime. Wiring
// lives in server/api/server.cc.
#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <map>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "server/api/server.h"
#include "server/common/atomic_file.h"
#include "server/common/logging.h"

ABSL_FLAG(std::string, data_dir, "./kaizen-data", "Directory for the catalogue and all blobs.");
ABSL_FLAG(std::string, host, "0.0.0.0", "Address to listen on (gRPC and metrics).");
ABSL_FLAG(int, grpc_port, 50051, "gRPC port; 0 picks a free one.");
ABSL_FLAG(int, metrics_port, 9464, "Prometheus /metrics port; -1 disables it.");
ABSL_FLAG(int, workers, 1, "Fine-tuning worker threads.");
ABSL_FLAG(int, threads, 0, "LibTorch intra-op threads; 0 means one per core.");
ABSL_FLAG(int64_t, max_upload_mb, 4096, "Largest dataset upload, in MiB.");
ABSL_FLAG(int64_t, max_model_mb, 2048, "Largest model upload, in MiB.");
ABSL_FLAG(int64_t, max_image_pixels, 25'000'000, "Largest image accepted (width * height).");
ABSL_FLAG(int, max_concurrent_uploads, 8,
          "Dataset and model uploads in progress at once; more get RESOURCE_EXHAUSTED.");
ABSL_FLAG(double, upload_idle_timeout_seconds, 60,
          "An upload stream with no message for this long ends with DEADLINE_EXCEEDED and "
          "leaves nothing behind.");
ABSL_FLAG(double, upload_deadline_seconds, 3600,
          "An upload stream still sending after this long ends with DEADLINE_EXCEEDED.");
ABSL_FLAG(int, grpc_max_threads, 128,
          "Most threads gRPC's synchronous server runs (grpc::ResourceQuota); at least 8.");
ABSL_FLAG(double, metrics_request_timeout_seconds, 5,
          "A /metrics connection must send its request and take the answer within this long.");
ABSL_FLAG(int, metrics_max_connections, 16,
          "/metrics connections served at once; more wait in the listen backlog.");
ABSL_FLAG(int, shutdown_grace_seconds, 30, "How long SIGTERM waits for calls in flight.");
ABSL_FLAG(double, drain_seconds, 5,
          "On SIGTERM, how long health reports NOT_SERVING while calls are still answered, "
          "before the server stops accepting them.");
ABSL_FLAG(int, max_batch_size, 32,
          "Most inputs the batcher merges into one forward pass; 1 = off.");
ABSL_FLAG(double, max_queue_delay_ms, 2, "Longest a Predict request waits for a batch to fill.");
ABSL_FLAG(int, max_queue_size, 1024,
          "Requests waiting per model; more fail at once with RESOURCE_EXHAUSTED.");
ABSL_FLAG(int, max_request_inputs, 256, "Most inputs in one Predict request.");
ABSL_FLAG(int, inference_threads, 0, "Intra-op threads per model executor; 0 = --threads.");
ABSL_FLAG(bool, preload_models, true,
          "Load every stored model before reporting SERVING (otherwise on first use).");
ABSL_FLAG(std::string, serving_config, "",
          "JSON file with per-model serving settings (policy, batching); see README.");
ABSL_FLAG(bool, optimize_for_inference, true,
          "Freeze served models and apply torch::jit::optimize_for_inference (CPU).");
ABSL_FLAG(std::string, serving_device, "", "Device for serving: cpu, cuda, cuda:N; empty = auto.");

namespace {
// A positive duration from a flag in seconds; nonsense becomes 1 ms rather
// than "never" or "at once".
absl::Duration Seconds(const absl::Flag<double>& flag) {
  return std::max(absl::Milliseconds(1), absl::Seconds(absl::GetFlag(flag)));
}
}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Kaizen fine-tuning and inference server.");
  absl::ParseCommandLine(argc, argv);

  // Block SIGINT/SIGTERM in every thread; one thread waits for them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  kaizen::api::KaizenServer::Options options;
  const std::string host = absl::GetFlag(FLAGS_host);
  options.data_dir = absl::GetFlag(FLAGS_data_dir);
  options.grpc_address = absl::StrCat(host, ":", absl::GetFlag(FLAGS_grpc_port));
  options.metrics_host = host;
  options.metrics_port = absl::GetFlag(FLAGS_metrics_port);
  options.workers = absl::GetFlag(FLAGS_workers);
  options.threads = absl::GetFlag(FLAGS_threads);
  options.max_upload_bytes = absl::GetFlag(FLAGS_max_upload_mb) << 20;
  options.max_model_bytes = absl::GetFlag(FLAGS_max_model_mb) << 20;
  options.max_image_pixels = absl::GetFlag(FLAGS_max_image_pixels);
  options.uploads.max_concurrent = std::max(1, absl::GetFlag(FLAGS_max_concurrent_uploads));
  options.uploads.idle_timeout = Seconds(FLAGS_upload_idle_timeout_seconds);
  options.uploads.deadline = Seconds(FLAGS_upload_deadline_seconds);
  options.grpc_max_threads = absl::GetFlag(FLAGS_grpc_max_threads);
  options.metrics_http.request_timeout = Seconds(FLAGS_metrics_request_timeout_seconds);
  options.metrics_http.max_connections = std::max(1, absl::GetFlag(FLAGS_metrics_max_connections));

  options.drain_delay = absl::Seconds(absl::GetFlag(FLAGS_drain_seconds));
  kaizen::serving::ModelServer::Options& serving = options.serving;
  serving.max_batch_size = std::max(1, absl::GetFlag(FLAGS_max_batch_size));
  serving.max_queue_delay = absl::Microseconds(
      static_cast<int64_t>(std::max(0.0, absl::GetFlag(FLAGS_max_queue_delay_ms)) * 1000));
  serving.max_queue_size = std::max(1, absl::GetFlag(FLAGS_max_queue_size));
  serving.max_request_inputs = std::max(1, absl::GetFlag(FLAGS_max_request_inputs));
  serving.threads = absl::GetFlag(FLAGS_inference_threads);
  serving.preload = absl::GetFlag(FLAGS_preload_models);
  serving.device = absl::GetFlag(FLAGS_serving_device);
  serving.optimize = absl::GetFlag(FLAGS_optimize_for_inference);
  if (const std::string path = absl::GetFlag(FLAGS_serving_config); !path.empty()) {
    std::string json;
    absl::Status read = kaizen::common::ReadFile(path, &json);
    absl::StatusOr<std::map<std::string, kaizen::serving::ServingConfig>> models =
        read.ok() ? kaizen::serving::ParseServingConfig(json, path)
                  : absl::StatusOr<std::map<std::string, kaizen::serving::ServingConfig>>(read);
    if (!models.ok()) {
      kaizen::common::LogError("bad --serving_config", {{"error", models.status().ToString()}});
      return 2;
    }
    serving.models = *std::move(models);
  }

  auto server = kaizen::api::KaizenServer::Start(options);
  if (!server.ok()) {
    kaizen::common::LogError("cannot start", {{"error", server.status().ToString()}});
    return 1;
  }
  std::thread signal_waiter([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    kaizen::common::LogInfo("signal received", {{"signal", sig}});
    (*server)->Shutdown(absl::Seconds(absl::GetFlag(FLAGS_shutdown_grace_seconds)));
  });
  (*server)->Wait();
  // Wake the waiter if the server stopped for another reason.
  pthread_kill(signal_waiter.native_handle(), SIGTERM);
  signal_waiter.join();
  kaizen::common::LogInfo("stopped");
  return 0;
}
