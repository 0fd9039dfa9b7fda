// Evaluates stored model versions on stored labelled datasets, for the
// EvaluateModel RPC and for jobs that name a test dataset: resolves the
// version, refuses what cannot be evaluated, bounds the work (examples per
// evaluation, evaluations at once) and runs training::EvaluateClassifier.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <functional>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kaizen/v1/model_service.pb.h"
#include "server/store/dataset_store.h"
#include "server/store/model_store.h"

namespace kaizen::jobs {

class ModelEvaluator {
 public:
  struct Options {
    // Evaluations running at once; an EvaluateModel call beyond it is refused
    // with RESOURCE_EXHAUSTED (a job waits for its turn instead).
    int max_concurrent = 1;
    // The largest dataset one evaluation reads.
    int64_t max_examples = 200000;
    int64_t batch_size = 64;
    torch::Device device = torch::kCPU;
  };

  ModelEvaluator(Options options, store::ModelStore* models, store::DatasetStore* datasets);

  // Validates `request` (names, version >= 0, top_k in [0, 1000]) and
  // evaluates, on `device` when given, else on Options::device. NOT_FOUND for
  // an unknown model, version or dataset; FAILED_PRECONDITION for a built-in
  // (untrained) model or a quarantined version (it crashed or failed to load
  // for serving); INVALID_ARGUMENT for classes that do not match;
  // RESOURCE_EXHAUSTED for a dataset over max_examples, or, unless
  // `wait_for_turn`, when max_concurrent evaluations are running; CANCELLED
  // when `should_stop` says so while waiting for a turn or between batches.
  absl::StatusOr<kaizen::v1::Evaluation> Evaluate(
      const kaizen::v1::EvaluateModelRequest& request, const std::function<bool()>& should_stop,
      bool wait_for_turn = false, std::optional<torch::Device> device = std::nullopt);

  // RESOURCE_EXHAUSTED, naming the flag, when a dataset of `examples` is
  // over the limit; checked again by Evaluate.
  absl::Status CheckSize(const std::string& dataset, int64_t examples) const;

  // Evaluations running now.
  int running() const;

 private:
  // False when no turn is free (and !wait) or should_stop said stop while
  // waiting; *stopped tells the two apart.
  bool TakeTurn(bool wait, const std::function<bool()>& should_stop, bool* stopped);
  void EndTurn();

  const Options options_;
  store::ModelStore* models_;
  store::DatasetStore* datasets_;
  mutable absl::Mutex mu_;
  int running_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace kaizen::jobs
