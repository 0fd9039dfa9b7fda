#include "server/serving/model_batcher.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "server/metrics/metrics.h"

namespace kaizen::serving {

struct ModelBatcher::Request {
  std::shared_ptr<const LoadedModel> model;
  torch::Tensor inputs;
  const InferOptions* options;
  absl::Time enqueued;
  absl::StatusOr<torch::Tensor> result;
  absl::Notification done;

  void Complete(absl::StatusOr<torch::Tensor> r) {
    result = std::move(r);
    done.Notify();
  }
};

absl::Status ModelBatcher::DeadlineError(absl::Time enqueued) const {
  return absl::DeadlineExceededError(
      absl::StrCat("the deadline passed after ", absl::FormatDuration(absl::Now() - enqueued),
                   " in the queue of model \"", options_.model_name, "\"; not computed"));
}

absl::Status ModelBatcher::CancelledError() {
  return absl::CancelledError("the caller cancelled the request; not computed");
}

ModelBatcher::ModelBatcher(Options options, metrics::Metrics* metrics)
    : options_(std::move(options)), metrics_(metrics), executor_([this] { Loop(); }) {}

ModelBatcher::~ModelBatcher() { Stop(); }

void ModelBatcher::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (executor_.joinable()) executor_.join();
}

absl::StatusOr<torch::Tensor> ModelBatcher::Run(std::shared_ptr<const LoadedModel> model,
                                                torch::Tensor inputs, const InferOptions& options) {
  Request request;
  request.model = std::move(model);
  request.inputs = std::move(inputs);
  request.options = &options;
  request.enqueued = absl::Now();
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return absl::UnavailableError("the server is shutting down");
    if (static_cast<int>(queue_.size()) >= options_.max_queue_size) {
      if (metrics_) metrics_->InferenceDropped(options_.model_name, "queue_full");
      return absl::ResourceExhaustedError(absl::StrCat("the queue of model \"", options_.model_name,
                                                       "\" is full (", queue_.size(),
                                                       " requests waiting); retry with backoff"));
    }
    queue_.push_back(&request);
    queued_inputs_ += request.inputs.size(0);
    PublishQueueLength();
  }
  // Wait for the executor; a request whose deadline passes or whose caller
  // goes away while still queued leaves the queue at once, so it neither
  // holds a slot nor gets computed.
  while (!request.done.WaitForNotificationWithDeadline(
      std::min(options.deadline, absl::Now() + absl::Milliseconds(50)))) {
    const bool expired = absl::Now() >= options.deadline;
    if (!expired && !(options.cancelled && options.cancelled())) continue;
    bool queued = false;
    {
      absl::MutexLock lock(&mu_);
      auto it = std::find(queue_.begin(), queue_.end(), &request);
      if (it != queue_.end()) {
        queued = true;
        queue_.erase(it);
        queued_inputs_ -= request.inputs.size(0);
        PublishQueueLength();
      }
    }
    if (!queued) {
      // The executor has it: it finishes (or drops) it shortly.
      request.done.WaitForNotification();
      break;
    }
    if (metrics_)
      metrics_->InferenceDropped(options_.model_name, expired ? "deadline" : "cancelled");
    return expired ? DeadlineError(request.enqueued) : CancelledError();
  }
  return std::move(request.result);
}

void ModelBatcher::Loop() {
  if (options_.threads > 0) at::set_num_threads(options_.threads);
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
      mu_.AwaitWithDeadline(absl::Condition(&stopping_or_full),
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
  // Requests left behind or merged: callers overlap, so the next batch is
  // worth waiting for. Updated again when this batch ends.
  concurrent_ = batch.size() > 1 || !queue_.empty();
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

void ModelBatcher::Execute(std::vector<Request*> batch) {
  const absl::Time now = absl::Now();
  std::vector<Request*> live;
  std::vector<torch::Tensor> inputs;
  for (Request* r : batch) {
    if (now > r->options->deadline) {
      if (metrics_) metrics_->InferenceDropped(options_.model_name, "deadline");
      r->Complete(DeadlineError(r->enqueued));
    } else if (r->options->cancelled && r->options->cancelled()) {
      if (metrics_) metrics_->InferenceDropped(options_.model_name, "cancelled");
      r->Complete(CancelledError());
    } else {
      live.push_back(r);
      inputs.push_back(r->inputs);
    }
  }
  if (live.empty()) return;
  absl::StatusOr<torch::Tensor> probs;
  try {
    const torch::Tensor x = inputs.size() == 1 ? inputs[0] : torch::cat(inputs);
    if (metrics_) {
      metrics_->ObserveBatch(options_.model_name, x.size(0),
                             absl::ToDoubleSeconds(now - live.front()->enqueued));
    }
    probs = live.front()->model->Predict(x);
  } catch (const std::exception& e) {
    // Never let an exception end the executor thread.
    probs = absl::InternalError(
        absl::StrCat("batching for model \"", options_.model_name, "\" failed: ", e.what()));
  }
  {
    // Requests that arrived during the forward pass mean overlapping callers.
    absl::MutexLock lock(&mu_);
    if (!queue_.empty()) concurrent_ = true;
  }
  int64_t offset = 0;
  for (Request* r : live) {
    const int64_t n = r->inputs.size(0);
    if (probs.ok()) {
      r->Complete(probs->narrow(0, offset, n));
    } else {
      r->Complete(probs.status());
    }
    offset += n;
  }
}

}  // namespace kaizen::serving
