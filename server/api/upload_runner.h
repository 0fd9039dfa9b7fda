// Admits upload streams up to a cap and runs their store work (writing
// chunks, ingest, inspection) on its own threads, so that gRPC's callback
// threads never block on disk or decoding. Shared by UploadDataset and
// UploadModel; the stream limits it carries are enforced by UploadReactor.
#pragma once

#include <functional>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/common/thread_pool.h"
#include "server/metrics/metrics.h"

namespace kaizen::api {

class UploadRunner {
 public:
  struct Options {
    // Uploads in progress at once, datasets and models together; more are
    // refused with RESOURCE_EXHAUSTED (--max_concurrent_uploads).
    int max_concurrent = 8;
    // A stream on which the client sends nothing for this long ends with
    // DEADLINE_EXCEEDED (--upload_idle_timeout_seconds).
    absl::Duration idle_timeout = absl::Seconds(60);
    // A stream still receiving after this long ends with DEADLINE_EXCEEDED
    // (--upload_deadline_seconds). Ingest after the last byte is not counted.
    absl::Duration deadline = absl::Hours(1);
  };

  // `metrics` may be null.
  UploadRunner(Options options, metrics::Metrics* metrics);

  // Takes a slot (OK) or answers RESOURCE_EXHAUSTED naming the cap.
  absl::Status Admit();
  // Gives a slot back.
  void Release();
  // Runs `work` on the runner's threads. An upload schedules one piece of
  // work at a time and holds a slot meanwhile, so with one thread per slot
  // no upload waits behind another.
  void Run(std::function<void()> work) { pool_.Schedule(std::move(work)); }

  const Options& options() const { return options_; }

 private:
  const Options options_;
  metrics::Metrics* metrics_;
  absl::Mutex mu_;
  int in_progress_ ABSL_GUARDED_BY(mu_) = 0;
  // Last member: its destructor joins the threads before the rest goes.
  common::ThreadPool pool_;
};

}  // namespace kaizen::api
