// Trains a text classifier (issue 20): a text encoder (transformer-small, or
// any TorchScript encoder whose forward(input_ids, attention_mask) ends in a
// Linear head) gets a new head for a dataset's classes and learns with one
// of the strategies:
//   FEATURE_EXTRACTION  the encoder frozen; its pooled features computed
//                       once (in eval mode) and cached, the head trained on
//                       the cache
//   FINE_TUNE           the top `trainable_blocks` blocks (layers, then the
//                       embeddings) train at learning_rate *
//                       backbone_lr_multiplier, the head at learning_rate
//   FULL                every parameter, the encoder at the smaller rate
//   SCRATCH             transformer-small rebuilt fresh (any other encoder
//                       re-initialised), every parameter at learning_rate
//   DISTILL             every parameter of the given student, at
//                       learning_rate * backbone_lr_multiplier below the
//                       head, on loss.h's DistillationLoss against a
//                       teacher's logits (computed by the caller, with the
//                       teacher's own tokenizer)
// with the same pieces as the image trainer: head.h splits and reassembles
// the classifier, freezing.h picks the blocks, optimizer_factory.h and
// lr_schedule.h the optimiser and schedule, loss.h the loss. Batches are
// padded to their longest row, in length-bucketed order. After each epoch
// it hands out a checkpoint (the classifier and resume_state.h's bytes), and
// a run given one continues from that epoch boundary exactly: the order of
// each epoch's batches and its dropout draws are functions of (seed,
// epoch), and the optimiser's state comes with the checkpoint.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kaizen/v1/finetune_service.pb.h"
#include "kaizen/v1/model_service.pb.h"
#include "server/distributed/group.h"

namespace kaizen::training {

// Labelled token sequences, each framed (text::FrameSequence), none empty.
struct TextExamples {
  std::vector<std::vector<int32_t>> sequences;
  std::vector<int64_t> labels;  // 0..num_classes-1, one per sequence
};

// A text strategy's defaults: AdamW (weight decay 0.01), cosine schedule
// with a tenth of the epochs warming up, gradient clipping at 1, a linear
// head; FEATURE_EXTRACTION lr 1e-2 (the head alone, on cached features),
// FINE_TUNE and INCREMENTAL (top 1 block) and FULL lr 1e-3 with the
// encoder at 0.1 of it,
// SCRATCH lr 1e-3. `epochs` and `batch_size` as given.
kaizen::v1::Hyperparameters DefaultTextHyperparameters(kaizen::v1::Strategy strategy,
                                                       int32_t epochs, int32_t batch_size);

// TextTrainerOptions::Distillation and ::Incremental. At namespace scope:
// nested, their default member initialisers would not yet be parsed where
// the enclosing struct instantiates std::optional of them, and clang then
// finds them not default-constructible (optional::emplace() refused).
struct TextDistillation {
  torch::Tensor teacher_logits;
  double temperature = 4;
  double alpha = 0.7;
};
struct TextIncremental {
  torch::Tensor previous_logits;
  double temperature = 2;
  double weight = 1;
};

struct TextTrainerOptions {
  // FEATURE_EXTRACTION, FINE_TUNE, FULL, SCRATCH, DISTILL or INCREMENTAL.
  kaizen::v1::Strategy strategy = kaizen::v1::STRATEGY_UNSPECIFIED;
  // Complete (DefaultTextHyperparameters, or ResolveHyperparameters): the
  // optimizer and schedule kinds set. A zero seed is used as it is.
  kaizen::v1::Hyperparameters hyperparameters;
  // The encoder (never modified: training works on a copy) and its metadata
  // (head.module_path; "fc" for transformer-small).
  torch::jit::Module base;
  kaizen::v1::Model base_metadata;
  int64_t num_classes = 2;
  // What padding positions hold.
  int32_t pad_id = 0;
  // After each epoch (validation figures when there is validation data).
  std::function<void(const kaizen::v1::EpochMetrics&)> on_epoch;
  // Checked before every step: true ends training there (the epoch under
  // way is not finished; a resumed run repeats it).
  std::function<bool()> should_stop;
  // After each epoch: the classifier so far (CPU, eval mode), its head's
  // path, the epoch (counted from 1) and its figures, whether it is the best so far
  // (val_accuracy, or train_loss without validation; ties are not) and the
  // bytes to continue from it (`resume`). An error ends training with it.
  struct Checkpoint {
    torch::jit::Module classifier;
    std::string head_path;
    int32_t epoch = 0;
    kaizen::v1::EpochMetrics metrics;  // the epoch's
    bool is_best = false;
    std::string resume_state;
  };
  std::function<absl::Status(const Checkpoint&)> on_checkpoint;
  // Continues from a checkpoint: `base` is then its classifier (head
  // included, as many outputs as num_classes), `base_metadata` its metadata,
  // and `resume_state` its bytes. Nothing is rebuilt or re-initialised
  // (SCRATCH included); epochs after the checkpoint's run.
  std::string resume_state;
  // DISTILL's soft targets: the teacher's logits on each training example
  // (row i for sequence i), [N, num_classes], and DistillationLoss's
  // temperature and alpha. Set exactly when the strategy is DISTILL.
  using Distillation = TextDistillation;
  std::optional<Distillation> distillation;
  // INCREMENTAL: `base` is the previous classifier; its head (a Linear)
  // grows to num_classes outputs, its rows kept bit for bit (GrowHead), and
  // the loss is IncrementalLoss against `previous_logits`: the previous
  // classifier's outputs on each training example (row i for sequence i,
  // [N, its classes], which are the first classes here), with `temperature`
  // and `weight` (0: the cross-entropy alone). Set exactly when the
  // strategy is INCREMENTAL. The encoder trains as FINE_TUNE's.
  using Incremental = TextIncremental;
  std::optional<Incremental> incremental;
  // Data-parallel training: this process is one rank of `group` (null:
  // alone), on the CPU. Every rank gets the same options and examples; each
  // global batch is split between the ranks (distributed::ShardOfBatch), the
  // gradients of its mean loss are summed once per step and every rank
  // applies the same update, so their parameters stay identical. A frozen
  // encoder's feature cache is computed a share per rank. The epochs'
  // training figures are the global batch's (every rank validates, on
  // all of the validation examples), `should_stop` is rank 0's, and the
  // caller sets `on_checkpoint` on rank 0 alone. Each rank's dropout draws
  // its own.
  distributed::Group* group = nullptr;
  // After every update: the updates so far and the trainable parameters.
  std::function<void(int64_t step, const std::vector<torch::Tensor>& trainable)> after_update;
};

struct TextTrainResult {
  // The classifier after the last epoch: forward(input_ids, attention_mask)
  // -> logits [N, num_classes], in eval mode on the CPU, head at
  // `head_path`.
  torch::jit::Module classifier;
  std::string head_path;
  // Every epoch's figures, those before a resumed checkpoint included.
  std::vector<kaizen::v1::EpochMetrics> epochs;
  int64_t trainable_parameters = 0;  // the head's included
  bool stopped = false;
  // Batches of the encoder run outside the training steps, in this process:
  // FEATURE_EXTRACTION's feature pass and validation (in a group, this
  // rank's share).
  int64_t backbone_forward_batches = 0;
};

// Training runs on the device of the base's parameters. An empty validation
// set counts as none. A group's failure (a rank gone, a timeout) is its
// status. InvalidArgument naming the problem: a group on another device than the CPU, another
// strategy, DISTILL without teacher logits of [N, num_classes] (or logits
// with another strategy), INCREMENTAL without previous logits of [N, K] with
// 2 <= K <= num_classes (or with another strategy), no example, a label outside [0, num_classes),
// fewer than 2 classes, an epoch count, batch size or learning rate that is not positive, an MLP
// head (text classifiers take a LINEAR head), a base whose head is not a Linear, resume bytes that
// do not decode or whose classifier has another number of outputs, and, for a transformer-small
// base, an id outside its vocabulary or a sequence longer than its max_length.
absl::StatusOr<TextTrainResult> TrainTextClassifier(const TextTrainerOptions& options,
                                                    const TextExamples& train,
                                                    const TextExamples* validation = nullptr);

// InvalidArgument naming the first sequence ("<what> sequence N"; `what` may
// be empty) that is empty, has more than `max_length` tokens (when
// max_length > 0), or holds an id outside [0, vocab_size) (when
// vocab_size > 0; `vocabulary` says whose, e.g. "the encoder's vocabulary").
absl::Status CheckTokenSequences(const std::vector<std::vector<int32_t>>& sequences,
                                 int64_t vocab_size, int64_t max_length, absl::string_view what,
                                 absl::string_view vocabulary = "the vocabulary");

// The device of `module`'s first parameter (the CPU when it has none).
torch::Device ModuleDevice(const torch::jit::Module& module);

// `rows` (each non-empty) padded with `pad_id` to the longest of them:
// input_ids and attention_mask, int64 [rows, longest], on `device`.
std::pair<torch::Tensor, torch::Tensor> PadSequences(const std::vector<std::vector<int32_t>>& rows,
                                                     int32_t pad_id, const torch::Device& device);

// Predicted class and the logits of each sequence, in eval mode, batches of
// `batch_size` padded to their longest.
struct TextPredictions {
  std::vector<int64_t> classes;
  torch::Tensor logits;  // [N, num_classes], float32, CPU
};
absl::StatusOr<TextPredictions> PredictText(torch::jit::Module& classifier,
                                            const std::vector<std::vector<int32_t>>& sequences,
                                            int32_t pad_id, int64_t batch_size = 64);

}  // namespace kaizen::training
