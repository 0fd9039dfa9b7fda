#include "server/serving/model_batcher.h"

#include <ATen/Parallel.h>
#if AT_PARALLEL_OPENMP
#include <omp.h>
#endif
#include <torch/torch.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "server/metrics/metrics.h"

namespace kaizen::serving {

// Lives on the caller's stack in Run(); the executor completes it under mu_
// and never touches it afterwards, since the caller may then return.
struct ModelBatcher::Request {
  std::shared_ptr<const LoadedModel> model;
  torch::Tensor inputs;
  const InferOptions* options;
  absl::Time enqueued;
  absl::StatusOr<torch::Tensor> result;
  bool done = false;

  void Complete(absl::StatusOr<torch::Tensor> r) {
    result = std::move(r);
    done = true;
  }
};

namespace {
// How often a caller whose request is queued checks for cancellation.
constexpr absl::Duration kCancelPoll = absl::Milliseconds(50);
}  // namespace

absl::Status ModelBatcher::DeadlineError(absl::Time enqueued) const {
  return absl::DeadlineExceededError(absl::StrCat(
      "the deadline passed after ", absl::FormatDuration(options_.clock->Now() - enqueued),
      " in the queue of model \"", options_.model_name, "\"; not computed"));
}

absl::Status ModelBatcher::CancelledError() {
  return absl::CancelledError("the caller cancelled the request; not computed");
}

ModelBatcher::ModelBatcher(Options options, metrics::Metrics* metrics)
    : options_(std::move(options)), instances_(std::max(1, options_.instances)), metrics_(metrics) {
  executors_.reserve(instances_);
  try {
    for (int i = 0; i < instances_; ++i) executors_.emplace_back([this] { Loop(); });
  } catch (...) {
    // Out of threads: join the ones started rather than terminate.
    Stop();
    throw;
  }
}

ModelBatcher::~ModelBatcher() { Stop(); }

void ModelBatcher::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& executor : executors_) {
    if (executor.joinable()) executor.join();
  }
}

absl::StatusOr<torch::Tensor> ModelBatcher::Run(std::shared_ptr<const LoadedModel> model,
                                                torch::Tensor inputs, const InferOptions& options) {
  Request request;
  request.model = std::move(model);
  request.inputs = std::move(inputs);
  request.options = &options;
  request.enqueued = options_.clock->Now();
  absl::MutexLock lock(&mu_);
  if (absl::Status queued = Enqueue(&request); !queued.ok()) return queued;
  return AwaitResult(&request);
}

absl::Status ModelBatcher::Enqueue(Request* request) {
  if (stopping_) return absl::UnavailableError("the server is shutting down");
  if (static_cast<int>(queue_.size()) >= options_.max_queue_size) {
    if (metrics_) metrics_->InferenceDropped(options_.model_name, "queue_full");
    return absl::ResourceExhaustedError(absl::StrCat("the queue of model \"", options_.model_name,
                                                     "\" is full (", queue_.size(),
                                                     " requests waiting); retry with backoff"));
  }
  queue_.push_back(request);
  queued_inputs_ += request->inputs.size(0);
  PublishQueueLength();
  return absl::OkStatus();
}

absl::StatusOr<torch::Tensor> ModelBatcher::AwaitResult(Request* request) {
  // A request whose deadline passes or whose caller goes away while still
  // queued leaves the queue at once, so it neither holds a slot nor gets
  // computed.
  const InferOptions& options = *request->options;
  common::Clock& clock = *options_.clock;
  while (!clock.AwaitWithDeadline(&mu_, absl::Condition(&request->done),
                                  std::min(options.deadline, clock.Now() + kCancelPoll))) {
    const bool expired = clock.Now() >= options.deadline;
    if (!expired && !(options.cancelled && options.cancelled())) continue;
    auto it = std::find(queue_.begin(), queue_.end(), request);
    if (it == queue_.end()) {
      // The executor has it: it finishes (or drops) it shortly.
      mu_.Await(absl::Condition(&request->done));
      break;
    }
    queue_.erase(it);
    queued_inputs_ -= request->inputs.size(0);
    PublishQueueLength();
    if (metrics_)
      metrics_->InferenceDropped(options_.model_name, expired ? "deadline" : "cancelled");
    return expired ? DeadlineError(request->enqueued) : CancelledError();
  }
  return std::move(request->result);
}

namespace {
// Sets the intra-op threads of the calling thread only. at::set_num_threads
// would also change ATen's process default, which every thread started later
// (gRPC handlers evaluating a model, loaders) takes on its first parallel op;
// and a count set before that lazy start-up would be overwritten by it.
void SetThisThreadsIntraOpThreads(int threads) {
  at::internal::lazy_init_num_threads();
#if AT_PARALLEL_OPENMP
  omp_set_num_threads(threads);
#else
  at::set_num_threads(threads);
#endif
}
}  // namespace

void ModelBatcher::Loop() {
  if (options_.threads > 0) SetThisThreadsIntraOpThreads(options_.threads);
  c10::InferenceMode guard;
  while (true) {
    std::vector<Request*> batch = NextBatch();
    if (batch.empty()) return;
    Execute(std::move(batch));
  }
}

std::vector<ModelBatcher::Request*> ModelBatcher::NextBatch() {
  absl::MutexLock lock(&mu_);
  auto stopping_or_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || !queue_.empty();
  };
  auto stopping_or_full = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || queued_inputs_ >= options_.max_batch_size;
  };
  while (true) {
    mu_.Await(absl::Condition(&stopping_or_work));
    if (!stopping_ && options_.max_batch_size > 1 && concurrent_ &&
        !queue_.front()->options->disable_batching) {
      // Wait for enough inputs to fill a batch, or until the oldest request
      // has waited max_queue_delay. Requests may leave meanwhile (deadline,
      // cancellation), so the queue is read again afterwards. Without recent
      // concurrency (a lone caller) waiting would only add latency.
      options_.clock->AwaitWithDeadline(&mu_, absl::Condition(&stopping_or_full),
                                        queue_.front()->enqueued + options_.max_queue_delay);
    }
    if (stopping_) {
      FailQueue();
      return {};
    }
    if (!queue_.empty()) return TakeBatch();
  }
}

std::vector<ModelBatcher::Request*> ModelBatcher::TakeBatch() {
  Request* first = queue_.front();
  queue_.pop_front();
  std::vector<Request*> batch = {first};
  int64_t inputs = first->inputs.size(0);
  if (options_.max_batch_size > 1 && !first->options->disable_batching) {
    // Requests for other versions (a swap happened) or that asked to run
    // alone keep their place for a later batch.
    for (auto it = queue_.begin(); it != queue_.end();) {
      Request* r = *it;
      if (r->model == first->model && !r->options->disable_batching &&
          inputs + r->inputs.size(0) <= options_.max_batch_size) {
        batch.push_back(r);
        inputs += r->inputs.size(0);
        it = queue_.erase(it);
      } else {
        ++it;
      }
    }
  }
  queued_inputs_ -= inputs;
  PublishQueueLength();
  ++busy_;
  // Requests merged or left behind while every instance is busy: callers
  // outnumber the instances, so the next batch is worth waiting for. Updated
  // again when this batch ends.
  concurrent_ = (batch.size() > 1 || !queue_.empty()) && busy_ >= instances_;
  return batch;
}

void ModelBatcher::FailQueue() {
  for (Request* r : queue_) {
    if (metrics_) metrics_->InferenceDropped(options_.model_name, "shutdown");
    r->Complete(absl::UnavailableError("the server is shutting down"));
  }
  queue_.clear();
  queued_inputs_ = 0;
  PublishQueueLength();
}

void ModelBatcher::PublishQueueLength() {
  if (metrics_)
    metrics_->SetQueuedRequests(options_.model_name, static_cast<int64_t>(queue_.size()));
}

std::vector<ModelBatcher::Request*> ModelBatcher::DropStale(const std::vector<Request*>& batch,
                                                            absl::Time now) {
  std::vector<Request*> live;
  std::vector<std::pair<Request*, bool>> dropped;  // (request, expired)
  for (Request* r : batch) {
    if (now > r->options->deadline) {
      dropped.emplace_back(r, true);
    } else if (r->options->cancelled && r->options->cancelled()) {
      dropped.emplace_back(r, false);
    } else {
      live.push_back(r);
    }
  }
  if (dropped.empty()) return live;
  absl::MutexLock lock(&mu_);
  for (const auto& [r, expired] : dropped) {
    if (metrics_)
      metrics_->InferenceDropped(options_.model_name, expired ? "deadline" : "cancelled");
    r->Complete(expired ? DeadlineError(r->enqueued) : CancelledError());
  }
  return live;
}

absl::StatusOr<torch::Tensor> ModelBatcher::Forward(const std::vector<Request*>& live,
                                                    absl::Time now) {
  std::vector<torch::Tensor> inputs;
  for (Request* r : live) inputs.push_back(r->inputs);
  try {
    const torch::Tensor x = JoinBatches(inputs);
    if (metrics_) {
      metrics_->ObserveBatch(options_.model_name, x.size(0),
                             absl::ToDoubleSeconds(now - live.front()->enqueued));
    }
    if (options_.before_forward) options_.before_forward();
    return live.front()->model->Predict(x);
  } catch (const std::exception& e) {
    // Never let an exception end the executor thread.
    return absl::InternalError(
        absl::StrCat("batching for model \"", options_.model_name, "\" failed: ", e.what()));
  }
}

void ModelBatcher::Execute(std::vector<Request*> batch) {
  const absl::Time now = options_.clock->Now();
  const std::vector<Request*> live = DropStale(batch, now);
  if (live.empty()) {
    absl::MutexLock lock(&mu_);
    --busy_;
    return;
  }
  const absl::StatusOr<torch::Tensor> probs = Forward(live, now);
  absl::MutexLock lock(&mu_);
  // Requests that arrived while every instance computed mean more callers
  // than instances.
  if (!queue_.empty() && busy_ >= instances_) concurrent_ = true;
  --busy_;
  int64_t rows = 0;
  for (Request* r : live) rows += r->inputs.size(0);
  absl::StatusOr<torch::Tensor> checked = probs;
  if (checked.ok() && (checked->dim() != 2 || checked->size(0) != rows)) {
    checked = absl::InternalError(absl::StrCat("model \"", options_.model_name, "\" returned ",
                                               checked->dim() == 0 ? 0 : checked->size(0),
                                               " rows for a batch of ", rows, " inputs"));
  }
  int64_t offset = 0;
  for (Request* r : live) {
    const int64_t n = r->inputs.size(0);
    if (checked.ok()) {
      r->Complete(checked->narrow(0, offset, n));
    } else {
      r->Complete(checked.status());
    }
    offset += n;
  }
}

}  // namespace kaizen::serving
