// Masked-language-model pretraining (BERT, Devlin et al., 2019) of a text
// encoder on unlabelled text (issue 20): a share of the tokens is chosen at
// random, most of them replaced by [MASK], some by a random token, some left
// as they are, and the model learns to predict the chosen tokens from the
// rest. The encoder it trains then starts FEATURE_EXTRACTION or FINE_TUNE on
// a labelled set, which is how transfer is shown without downloading weights.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kaizen/v1/finetune_service.pb.h"

namespace kaizen::training {

// Labels of positions that are not predicted (cross_entropy's ignore_index).
inline constexpr int64_t kNotPredicted = -100;

struct MaskingOptions {
  // Share of the eligible positions chosen for prediction.
  double mask_probability = 0.15;
  // Of the chosen: replaced by mask_id, replaced by a token drawn uniformly
  // from [0, vocab_size), and the rest left unchanged (BERT's 80/10/10).
  double replace_with_mask = 0.8;
  double replace_with_random = 0.1;
  int64_t mask_id = -1;
  int64_t vocab_size = 0;
  // Ids never chosen (the framing tokens); padding (mask 0) never is either.
  std::vector<int64_t> never_mask;
};

// InvalidArgument naming what is out of range: probabilities outside [0, 1]
// or replacements summing over 1, mask_id outside [0, vocab_size),
// vocab_size < 2.
absl::Status ValidateMaskingOptions(const MaskingOptions& options);

struct MaskedBatch {
  torch::Tensor input_ids;  // int64 [N, T], chosen positions replaced
  torch::Tensor labels;     // int64 [N, T]: the original id where chosen, else kNotPredicted
};

// Chooses and replaces positions of `input_ids` (int64 [N, T]) where
// `attention_mask` [N, T] is nonzero and the id is not in never_mask, each
// with probability mask_probability, drawing from `generator` (on the CPU;
// the results are on input_ids' device). When that chooses none and some
// position is eligible, one eligible position is chosen, so that a batch's
// loss is always defined.
MaskedBatch MaskTokens(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                       const MaskingOptions& options, at::Generator& generator);

// Mean cross-entropy over the chosen positions of logits [N, T, V] against
// labels [N, T], computed in float32.
torch::Tensor MaskedLanguageModelLoss(const torch::Tensor& logits, const torch::Tensor& labels);

// What PretrainMaskedLanguageModel hands out after each epoch.
struct PretrainEpoch {
  // epoch (1-based), train_loss (the mean over the predicted positions) and,
  // when PretrainOptions::validation_loss is set, val_loss.
  kaizen::v1::EpochMetrics metrics;
  // The lowest val_loss so far (train_loss without validation), counting
  // the epochs before a resume.
  bool is_best = false;
  // resume_state.h's bytes that continue the run after this epoch, given
  // the model's encoder as it is now: the step count, history, best so far,
  // the optimizer's state and the prediction head's weights (the encoder's
  // are the caller's to keep, as the checkpoint's module).
  std::string resume_state;
};

struct PretrainOptions {
  int32_t epochs = 3;
  int64_t batch_size = 32;
  // AdamW (decoupled weight decay), the rate rising linearly over the first
  // warmup_share of the steps, then falling linearly towards 0 (the last
  // step gets 1/(steps after warm-up) of it).
  double learning_rate = 5e-4;
  double weight_decay = 0.01;
  double warmup_share = 0.06;
  MaskingOptions masking;
  // What padding positions hold.
  int64_t pad_id = 0;
  // Seeds the epoch orders, the masking and LibTorch's default generator
  // (dropout), each reseeded at the start of every epoch from (seed, epoch),
  // so that a run resumed after epoch E continues as if it had not stopped.
  uint64_t seed = 0;
  // Checked before every step: true stops there (the epoch under way is not
  // kept; a resume repeats it).
  std::function<bool()> should_stop;
  // After every epoch, in eval mode: the model's masked-language-model loss
  // on held-out texts (EvaluateMaskedLanguageModel). Unset: no val_loss.
  // Cancelled stops the run as should_stop does (the epoch is not kept).
  std::function<absl::StatusOr<double>()> validation_loss;
  // After every epoch. An error ends training with it.
  std::function<absl::Status(const PretrainEpoch&)> on_epoch;
  // A PretrainEpoch's resume_state: the run continues after that epoch. The
  // model's encoder must hold the weights it had then (the checkpoint's);
  // the head, optimizer and counters come from the bytes. Empty: from the
  // start.
  std::string resume;
};

struct PretrainResult {
  // Every epoch's train loss, those before a resume included.
  std::vector<double> epoch_losses;
  int64_t steps = 0;  // optimizer steps, those before a resume included
  bool stopped = false;
};

// Trains `model` (CreateMaskedLanguageModel's wrapper; its parameters on one
// device, where batches are sent) on `sequences`: token ids, each framed
// (text::FrameSequence), none empty, batched in length-bucketed order and
// padded to each batch's longest. A batch with no position to predict (texts
// of framing tokens alone) is skipped; the epoch loss is the mean over the
// predicted positions. InvalidArgument for bad options, no sequence, an id
// outside [0, vocab_size), a vocab_size other than the encoder's, a sequence
// longer than its positions, nothing to predict at all, or resume bytes that
// do not decode, have another seed, no epoch left or a head of other shapes.
absl::StatusOr<PretrainResult> PretrainMaskedLanguageModel(
    torch::jit::Module& model, const std::vector<std::vector<int32_t>>& sequences,
    const PretrainOptions& options);

// The model's mean masked-language-model loss on `sequences` in eval mode,
// with masking drawn from `seed` (the same seed chooses the same positions,
// so two models compare on the same predictions). Cancelled when
// `should_stop` says so between two batches.
absl::StatusOr<double> EvaluateMaskedLanguageModel(
    torch::jit::Module& model, const std::vector<std::vector<int32_t>>& sequences,
    const MaskingOptions& masking, int64_t pad_id, int64_t batch_size, uint64_t seed,
    const std::function<bool()>& should_stop = nullptr);

}  // namespace kaizen::training
