// kaizen-server: flags, signal handling and the server's lifetime. Wiring
// lives in server/api/server.cc.
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "server/api/server.h"
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
ABSL_FLAG(int, shutdown_grace_seconds, 30, "How long SIGTERM waits for calls in flight.");

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
