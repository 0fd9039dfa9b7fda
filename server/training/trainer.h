// Runs one fine-tuning job end to end: converts the data to the model's
// input, replaces the head, freezes what the strategy keeps fixed, trains
// with the resolved optimiser, schedule, augmentation and loss, evaluates
// every epoch and hands a self-contained checkpoint to the caller after each
// one with validation data or early stopping, else after about every tenth
// of the run and the last. A pure library: the caller (the job/worker layer)
// owns storage, events and threads.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kaizen/v1/finetune_service.pb.h"
#include "kaizen/v1/model_service.pb.h"
#include "server/datasets/dataset_file.h"
#include "server/datasets/image_decoder.h"
#include "server/datasets/record_file.h"
#include "server/distributed/group.h"

namespace kaizen::training {

// The datasets, any image sizes and 1 or 3 channels: decoded in memory
// (`train`, `validation`; the caller keeps them alive during Train()), or as
// record files (`train_file`, `validation_file`, used when `train` is null),
// which the trainer converts into memory when they fit
// TrainerOptions::max_image_memory_bytes and streams from disk otherwise.
struct TrainingData {
  const datasets::DecodedDataset* train = nullptr;
  // A separate validation dataset with the same class names, or nullptr to
  // hold out hyperparameters.validation.split of `train` (stratified, seeded;
  // 0 means no validation).
  const datasets::DecodedDataset* validation = nullptr;
  std::shared_ptr<const datasets::RecordFile> train_file;
  std::shared_ptr<const datasets::RecordFile> validation_file;
};

// Handed to the caller after every epoch with validation data or early
// stopping; otherwise after every ceil(epochs / 10)th epoch and the last (a
// 300-epoch run at 1 image per class writes 10, not 300); and once more when
// stopped (should_stop) between two steps. A job killed between two
// checkpoints resumes from the last one and repeats the epochs since.
struct Checkpoint {
  // Self-contained TorchScript classifier in eval mode on the CPU, new head
  // included; save it with models::SaveModelFile.
  torch::jit::Module module;
  // input_shape, normalization and architecture of the base; class_names of
  // the dataset; head {module_path, kind, in/out features}; parameter_count;
  // source FINE_TUNED; metrics "train_loss", "train_accuracy", with
  // validation "val_loss", "val_accuracy", and "bn_recalibrated": how many
  // BatchNorm layers that trained had their running statistics recomputed on
  // the un-augmented training images for this checkpoint (0: none trained).
  kaizen::v1::Model metadata;
  int32_t epoch = 0;  // epochs completed
  // Opaque bytes to continue exactly (TrainerOptions::resume_state): from
  // the next epoch, or, for a checkpoint taken when stopped, from the very
  // step where training stopped (the losses on the CPU are those of a run
  // that never stopped).
  std::string resume_state;
  // STRATEGY_INCREMENTAL with rehearsal: the memory to store beside this
  // version (the merged classes, bounded), the same for every checkpoint of
  // a job.
  std::shared_ptr<const datasets::DecodedDataset> exemplars;
  // A text model's tokenizer file (metadata.text_input set), stored in the
  // model file (models::SaveModelFile).
  std::string tokenizer;
  // Best so far by the checkpoint metric: val_accuracy (or val_loss when
  // early stopping watches it); train_loss without validation.
  bool is_best = false;
};

struct Callbacks {
  std::function<void(const kaizen::v1::StepProgress&)> on_step;  // every step
  std::function<void(const kaizen::v1::EpochMetrics&)> on_epoch;
  // An error aborts training with that status. Unset: no checkpoint is
  // built at all (tuning trials), which saves a copy of the model per epoch.
  std::function<absl::Status(const Checkpoint&)> on_checkpoint;
  // Checked before every step: true stops training there (cancel, pause or
  // shutdown) after a final checkpoint from which it can resume at that step.
  std::function<bool()> should_stop;
  // What the trainer decided for the caller to pass on (a job event):
  // settings it overrode (a validation split too small to keep), how the
  // head's input was standardised, which BatchNorm statistics it recomputed.
  // The same lines end up in TrainResult::notes.
  std::function<void(const std::string&)> on_message;
  // After every optimizer update: the step (1-based over the run) and the
  // parameters that train, as they now are (checks that data-parallel ranks
  // agree).
  std::function<void(int64_t step, const std::vector<torch::Tensor>& trainable)> after_update;
};

struct TrainerOptions {
  kaizen::v1::Strategy strategy = kaizen::v1::STRATEGY_UNSPECIFIED;
  // Resolved (ResolveHyperparameters).
  kaizen::v1::Hyperparameters hyperparameters;
  // The base model: a fresh built-in, an uploaded or fine-tuned TorchScript
  // classifier, or, when resuming, the module of the last checkpoint. Never
  // modified (training works on a deep copy).
  torch::jit::Module base;
  // Its metadata: input_shape, normalization, architecture, head.module_path.
  kaizen::v1::Model base_metadata;
  torch::Device device = torch::kCPU;
  // Empty for a fresh start, else Checkpoint::resume_state of the checkpoint
  // whose module is `base`.
  std::string resume_state;
  // STRATEGY_DISTILL: the teacher, run in inference mode on every training
  // batch (its logits cached once per image when augmentation is off).
  struct Distillation {
    // A trained classifier whose outputs are the training dataset's classes
    // in order; copied to the device, never modified.
    torch::jit::Module teacher;
    // Its input_shape and normalization (the student's batches are adapted
    // to them); name for messages.
    kaizen::v1::Model teacher_metadata;
    // Resolved (ResolveDistillation): see DistillationLoss.
    double temperature = 4.0;
    double alpha = 0.7;
  };
  std::optional<Distillation> distillation;
  // STRATEGY_INCREMENTAL: the data's class list is the merged one (the
  // previous model's classes first, in order; see MergeClassNames).
  struct Incremental {
    // The base version, copied to the device and never modified: the
    // distillation target on the old classes, and the features that herding
    // chooses exemplars by. Its head grows into the new model's when the job
    // starts (not when it resumes).
    torch::jit::Module previous;
    kaizen::v1::Model previous_metadata;  // with its class_names
    // Resolved (ResolveIncremental).
    kaizen::v1::IncrementalOptions options;
    // Rehearsal: the base version's memory (any class names; those of the
    // merged list are replayed), or, for a base without one, the images the
    // base was trained on to choose it from (herding or random per class on
    // the old classes); both may be null when rehearsal is off. With
    // `resume_memory` (the memory stored with the checkpoint being resumed)
    // the new memory is not chosen again but taken from it.
    const datasets::DecodedDataset* memory = nullptr;
    const datasets::DecodedDataset* memory_source = nullptr;
    const datasets::DecodedDataset* resume_memory = nullptr;
  };
  std::optional<Incremental> incremental;
  // With a frozen backbone and no augmentation, compute the backbone's
  // features once and train the head on them. Off only to measure what the
  // cache saves (bench/train_bench --no_feature_cache); results are the same.
  bool use_feature_cache = true;
  // FINE_TUNE (and INCREMENTAL) without augmentation: the frozen layers
  // below the first trainable block give the same output for an image at
  // every step, so it is computed once for every training and validation
  // image (ForwardCut) and each step, evaluation and BatchNorm
  // recalibration runs only the layers from that block on. At most this
  // many bytes of those outputs; beyond, or for a model whose forward cannot
  // be cut there (a note says why), every step runs the whole model. 0: off.
  int64_t max_prefix_cache_bytes = int64_t{1} << 30;
  // The backbone's convolution weights and its image batches in the
  // channels_last memory format (NHWC) instead of the contiguous one: the
  // same model, other oneDNN kernels, 1.09x (resnet-small) to 1.38x
  // (resnet18, top block) faster training steps on 2 cores
  // (bench/RESULTS.md, 2026-12-03). Off by default: with it a job resumed
  // from a checkpoint drifts from an uninterrupted one by float rounding
  // (cause not found), where the contiguous format resumes to the bit.
  bool channels_last = false;
  // Record-file data (TrainingData::train_file): the most bytes of images,
  // converted to the model's input, held in memory (training and validation
  // together). A dataset that converts to more streams from its record file
  // every epoch, decoded on `loader_threads` threads at most
  // `prefetch_batches` batches (and 256 MiB) ahead, so that the job's memory
  // does not grow with its dataset (the feature cache of FEATURE_EXTRACTION
  // and a DISTILL teacher's logit cache, a few floats per image, do).
  // STRATEGY_INCREMENTAL needs its images in memory (InvalidArgument beyond).
  int64_t max_image_memory_bytes = int64_t{2} << 30;
  int loader_threads = 2;
  int prefetch_batches = 4;
  // What decoding one stored record may cost (each is also held to its index
  // entry's pixel count).
  datasets::DecodeLimits decode_limits;
  // Data-parallel training: this process is one rank of `group` (null:
  // alone). Every rank runs Train() with the same options and data. Each
  // global batch of hyperparameters.batch_size is split between the ranks
  // (ShardOfBatch; a streamed dataset decodes only its rank's share); the
  // gradients are weighted by each rank's share and summed once per step in
  // buckets, so the update is the global batch's, and the parameters stay
  // equal on every rank bit for bit (rank 0's are broadcast at the start).
  // BatchNorm normalises with each rank's own batch statistics; rank 0's
  // running statistics are broadcast before each epoch's evaluation. Losses
  // and accuracies are the global batch's. A stop is agreed between the
  // ranks before each step (rank 0's should_stop decides), so is early
  // stopping (rank 0's metrics); a rank whose peer fails gets an
  // Unavailable status from its next collective. Dropout and augmentation
  // draws differ between ranks (their seeds are derived from the rank).
  // The callbacks of ranks other than 0 should not write checkpoints.
  // STRATEGY_INCREMENTAL: rank 0 alone needs the memories (`incremental`'s
  // memory, memory_source, resume_memory): it chooses the exemplars, sends
  // the images it replays to the other ranks, and alone has the next memory
  // in TrainResult.
  distributed::Group* group = nullptr;
  // Tests: TrainResult::training_set_sha256 (hashes the training images).
  bool digest_training_set = false;
};

struct TrainResult {
  int32_t epochs_completed = 0;
  bool stopped_early = false;
  bool cancelled = false;
  kaizen::v1::EpochMetrics last;  // of the last completed epoch
  std::string best_metric_name;   // "val_accuracy", "val_loss" or "train_loss"
  double best_metric = 0;
  int32_t best_epoch = 0;
  // Batches the backbone ran forward (training, feature caching, feature
  // statistics, BatchNorm recalibration and evaluation), in this call; with
  // the feature cache only the first epoch runs it.
  int64_t backbone_forward_batches = 0;
  // With TrainerOptions::digest_training_set and the images in memory: the
  // SHA-256 of the images (uint8, at the model's input) and labels this
  // rank trains on, replayed exemplars included ("" otherwise).
  std::string training_set_sha256;
  // BatchNorm layers recalibrated for the last checkpoint (its
  // "bn_recalibrated" metric).
  int batchnorm_recalibrated = 0;
  // Every line passed to Callbacks::on_message, in order.
  std::vector<std::string> notes;
  // STRATEGY_DISTILL, once training ends (not when stopped): the teacher's
  // accuracy on the validation images the student is scored on
  // (last.val_accuracy), when there are any (validation_examples > 0).
  double teacher_val_accuracy = 0;
  int64_t validation_examples = 0;
  // Batches the teacher ran forward in this call (training, the logit cache
  // (in a group, this rank's chunks of it) and its validation accuracy).
  int64_t teacher_forward_batches = 0;
  // STRATEGY_INCREMENTAL, once training ends: the previous model's accuracy
  // on the validation images, over the old classes, the new and all (its
  // prediction is one of the old classes), with the counts; and the new
  // memory (null without rehearsal) and the number of exemplars replayed.
  struct Incremental {
    int64_t old_examples = 0;
    int64_t new_examples = 0;
    double old_accuracy_before = 0;
    double new_accuracy_before = 0;
    double all_accuracy_before = 0;
    std::shared_ptr<const datasets::DecodedDataset> memory;
    int64_t replayed = 0;
  };
  Incremental incremental;
};

// The INCREMENTAL class list: `previous` in order, then the names of
// `dataset` that `previous` lacks, in dataset order.
std::vector<std::string> MergeClassNames(const std::vector<std::string>& previous,
                                         const std::vector<std::string>& dataset);

// Runs the job. Never throws. Errors: InvalidArgument for unusable data or
// settings and for a loss that became NaN/Inf ("loss became NaN at epoch 2
// step 7 (learning rate 0.5); lower the learning rate") and for a DISTILL job
// without a usable teacher or an INCREMENTAL job whose data's class list does not start with
// the previous model's; ResourceExhausted when the device runs
// out of memory; Internal for other LibTorch failures, with "epoch E step S: " in front; the status
// of on_checkpoint when it fails.
absl::StatusOr<TrainResult> Train(const TrainerOptions& options, const TrainingData& data,
                                  const Callbacks& callbacks);

}  // namespace kaizen::training
