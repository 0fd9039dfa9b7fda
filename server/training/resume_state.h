// Everything besides the model weights that a job needs to continue exactly
// where a checkpoint left it: progress, early-stopping bookkeeping, metric
// history and the optimizer's state. A checkpoint is taken either at the end
// of an epoch or, when a job is paused, cancelled or stopped by a shutdown,
// between two steps of an epoch. Random streams are a pure function of
// (seed, epoch) (see DeriveSeed), so at an epoch boundary the seed is all the
// RNG state there is; between steps the generators' states, the sampler's
// position and the epoch's running sums are saved too.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kaizen/v1/finetune_service.pb.h"

namespace kaizen::training {

// Where a checkpoint taken between two steps stands within its epoch.
struct EpochPosition {
  // Batches of epoch `epochs_completed` (0-based) already trained; 0 at an
  // epoch boundary, where nothing else here is used.
  int64_t step = 0;
  // The epoch's running sums so far (for its train_loss / train_accuracy)
  // and the learning rate of its last step.
  double loss_sum = 0;
  int64_t correct = 0;
  int64_t seen = 0;
  double learning_rate = 0;
  // Seconds of training spent in the epoch so far.
  double seconds = 0;
  // at::Generator states: LibTorch's default generator of the device (CPU;
  // and the CUDA one on a GPU: dropout and other random ops draw from it)
  // and the augmentation generator.
  std::string torch_rng;
  std::string cuda_rng;
  std::string augment_rng;
};

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
  // FP16 steps since the loss scale last changed.
  int32_t good_steps = 0;
  EpochPosition position;
  // FEATURE_EXTRACTION: the standardisation its head trains behind (the
  // features' mean and std) and the head's own weights before the
  // standardisation was folded into the checkpoint's module, so that a resume
  // continues with exactly those numbers. Trainer-defined bytes; empty for
  // other strategies and for jobs started before version 3.
  std::string feature_standardization;
  // MASKED_LM: the prediction head's parameters (everything of the
  // pretraining wrapper but its encoder, whose weights are the checkpoint's
  // module), as a LibTorch archive. Empty for other strategies and for
  // states before version 4.
  std::string masked_lm_head;
};

// A versioned little-endian binary encoding: version 4 with a
// masked_lm_head, else version 3 (which the previous release reads).
std::string EncodeResumeState(const ResumeState& state);

// InvalidArgument when `bytes` is not an encoding this version understands.
// Encodings of earlier versions (1: epoch boundaries only; 2: no feature
// standardisation; 3: no masked-language-model head) still decode.
absl::StatusOr<ResumeState> DecodeResumeState(absl::string_view bytes);

}  // namespace kaizen::training
