// Turns the `finetune start` flags into a StartFineTuneRequest that carries
// only what the user gave, so that everything else takes the server's
// per-strategy defaults (GetJob reports them as resolved_hyperparameters),
// and parses the job-state names that `jobs list --state` takes.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kaizen/v1/finetune_service.pb.h"

namespace kaizen::cli {

// The flags as typed; an empty string means "not given". Values are checked
// for syntax and obvious ranges here (usage errors); the server checks the
// rest.
struct FineTuneFlags {
  std::string base;          // MODEL[:VERSION]
  std::string dataset;       // training dataset
  std::string output_model;  // name of the model the checkpoints become
  std::string strategy;      // feature_extraction|fine_tune|full|scratch|...
  std::string epochs;
  std::string batch_size;
  std::string lr;
  std::string backbone_lr_multiplier;
  std::string trainable_blocks;
  std::string optimizer;  // sgd|adam|adamw
  std::string momentum;
  bool nesterov = false;
  std::string weight_decay;
  std::string schedule;  // constant|step|cosine
  std::string warmup_epochs;
  std::string label_smoothing;
  std::string early_stopping_patience;
  std::string clip_norm;
  std::string seed;
  // Text datasets (Hyperparameters.text): ids per text; a new encoder's
  // tokenizer pieces.
  std::string max_length;
  std::string vocab_size;
  // on: augmentation with kAugmentCropPadding and horizontal flips; off: an
  // augmentation message with enabled=false. Not given: no augmentation
  // message at all, so the strategy's default applies.
  std::string augment;
  std::string validation_split;
  std::string validation_dataset;
  std::string test_dataset;
  std::string head;  // linear|mlp
  std::string head_warmup_epochs;
  std::string mixed_precision;  // off|bf16|fp16
  std::string priority;
  std::string request_id;
  std::string keep_checkpoints;
  std::string world_size;
  // validate_only: show the job (resolved hyperparameters) without queuing
  // it; --output_model may then be left out.
  bool dry_run = false;
  // Tuning (StartFineTuneRequest.tuning): trials, seconds, seed, factor.
  std::string tune_trials;
  std::string tune_time_budget;
  std::string tune_seed;
  std::string tune_reduction_factor;
  // DISTILL (StartFineTuneRequest.distillation): the teacher MODEL[:VERSION],
  // the softmax temperature and the weight of the soft-target loss.
  std::string teacher;
  std::string temperature;  // also INCREMENTAL's distillation temperature
  std::string distill_alpha;
  // INCREMENTAL (StartFineTuneRequest.incremental): exemplars per class and
  // in all, herding|random, comma-separated previous datasets, the weight of
  // the distillation term, and the two protections switched off.
  std::string exemplars_per_class;
  std::string max_exemplars;
  std::string exemplar_selection;
  std::string previous_datasets;
  std::string distill_weight;
  bool no_rehearsal = false;
  bool no_distillation = false;
};

// Padding of the random crop that --augment=on asks for (the usual value for
// small images such as CIFAR's 32x32).
inline constexpr int kAugmentCropPadding = 4;

absl::StatusOr<kaizen::v1::StartFineTuneRequest> BuildStartFineTuneRequest(
    const FineTuneFlags& flags);

// "queued,running" -> {QUEUED, RUNNING}; also takes the enum names
// (JOB_STATE_QUEUED) and "canceled". Empty text gives an empty list.
absl::StatusOr<std::vector<kaizen::v1::JobState>> ParseJobStates(const std::string& text);

}  // namespace kaizen::cli
