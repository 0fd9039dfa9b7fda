// The dynamic batcher of one model: a bounded queue of requests and
// `instances` executor threads (Triton's instance_group), each of which takes
// the next batch off the queue and runs it while the others take theirs. A
// batch merges requests for the same loaded version into a single forward
// pass of up to max_batch_size inputs, waiting at most max_queue_delay (from
// the oldest request's arrival) for it to fill. A lone caller (no overlap
// with other requests lately) is not made to wait. The instances share the
// version's module: LoadedModel::Predict is safe to call from several
// threads, and a frozen module's weights are read-only, so a copy per
// instance would only multiply memory and load time.
#pragma once

#include <torch/script.h>

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/common/clock.h"
#include "server/serving/loaded_model.h"

namespace kaizen::metrics {
class Metrics;
}

namespace kaizen::serving {

struct InferOptions {
  // Dropped with DEADLINE_EXCEEDED if not computed by then.
  absl::Time deadline = absl::InfiniteFuture();
  // Polled before compute; true drops the request with CANCELLED.
  std::function<bool()> cancelled;
  // Run alone, without waiting to fill a batch.
  bool disable_batching = false;
};

class ModelBatcher {
 public:
  struct Options {
    std::string model_name;
    int max_batch_size = 32;
    absl::Duration max_queue_delay = absl::Milliseconds(2);
    int max_queue_size = 1024;
    // Executor threads taking batches off the one queue (at least 1).
    int instances = 1;
    // Intra-op threads of each executor; 0 keeps LibTorch's default.
    int threads = 0;
    // Times the batch delay, request deadlines and the queue's waits.
    common::Clock* clock = common::Clock::Real();
    // Tests only: called on the executor before each forward pass.
    std::function<void()> before_forward;
  };

  ModelBatcher(Options options, metrics::Metrics* metrics);
  // Stops (see Stop()).
  ~ModelBatcher();

  // Queues `inputs` (float [N, C, H, W]) for `model` and blocks until they
  // are computed or dropped; returns probabilities [N, classes].
  absl::StatusOr<torch::Tensor> Run(std::shared_ptr<const LoadedModel> model, torch::Tensor inputs,
                                    const InferOptions& options);

  // Fails every queued request with UNAVAILABLE and joins the executors.
  void Stop();

 private:
  struct Request;

  // Queues `request`; Unavailable when stopping, ResourceExhausted when full.
  absl::Status Enqueue(Request* request) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Waits until the executor completes `request`, or drops it from the queue
  // once its deadline passes or its caller goes away.
  absl::StatusOr<torch::Tensor> AwaitResult(Request* request) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Loop();
  // Takes the next batch off the queue, waiting for it to fill; empty when
  // stopping.
  std::vector<Request*> NextBatch();
  // Pops the oldest request and every queued one that can join its batch.
  std::vector<Request*> TakeBatch() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Execute(std::vector<Request*> batch);
  // Completes the requests of `batch` that expired or were cancelled, and
  // returns the others.
  std::vector<Request*> DropStale(const std::vector<Request*>& batch, absl::Time now);
  // One forward pass over the inputs of `live`, merged.
  absl::StatusOr<torch::Tensor> Forward(const std::vector<Request*>& live, absl::Time now);
  absl::Status DeadlineError(absl::Time enqueued) const;
  static absl::Status CancelledError();
  // Completes every queued request with UNAVAILABLE.
  void FailQueue() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // kaizen_inference_queue_requests{model} := the queue's length.
  void PublishQueueLength() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  const int instances_;  // executors, at least 1
  metrics::Metrics* metrics_;
  absl::Mutex mu_;
  std::deque<Request*> queue_ ABSL_GUARDED_BY(mu_);
  int64_t queued_inputs_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Whether callers outnumbered the instances recently (requests queued up
  // while every instance ran a batch); only then does a batch wait to fill.
  // Callers no more than the instances are served at once, one per instance.
  bool concurrent_ ABSL_GUARDED_BY(mu_) = true;
  // Executors between taking a batch and completing it.
  int busy_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::thread> executors_;
};

}  // namespace kaizen::serving
