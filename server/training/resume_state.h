// Everything besides the model weights that a job needs to continue exactly
// where a checkpoint left it: progress, early-stopping bookkeeping, metric
// history and the optimizer's state. Random streams are a pure function of
// (seed, epoch) (see DeriveSeed), so the seed is all the RNG state there is.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kaizen/v1/finetune_service.pb.h"

namespace kaizen::training {

struct ResumeState {
  int32_t epochs_completed = 0;
  int64_t global_step = 0;  // optimizer steps taken
  uint64_t seed = 0;
  bool has_best = false;
  double best_metric = 0;  // by the checkpoint metric (is_best)
  int32_t best_epoch = 0;
  double patience_reference = 0;  // early stopping: best beyond min_delta
  int32_t epochs_without_improvement = 0;
  double loss_scale = 0;  // FP16 dynamic loss scale; 0 when unused
  std::vector<kaizen::v1::EpochMetrics> history;
  std::string optimizer;  // torch::save(optimizer) bytes
};

// A versioned little-endian binary encoding.
std::string EncodeResumeState(const ResumeState& state);

// InvalidArgument when `bytes` is not an encoding this version understands.
absl::StatusOr<ResumeState> DecodeResumeState(absl::string_view bytes);

}  // namespace kaizen::training
