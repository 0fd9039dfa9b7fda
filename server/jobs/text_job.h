// Fine-tuning jobs on text datasets (issue 20): what StartFineTune checks
// for them and what a worker runs. The image path (training::Train) reads
// pixels; a text job tokenises its dataset's texts with the tokenizer its
// model carries (or, building a new encoder, one it trains on its own
// training texts), trains with training::TrainTextClassifier or
// PretrainMaskedLanguageModel, and ends with one version that carries its
// tokenizer, so that Predict turns texts into ids exactly as training did.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kaizen/v1/finetune_service.pb.h"
#include "kaizen/v1/model_service.pb.h"
#include "server/datasets/record_file.h"
#include "server/jobs/data_parallel.h"
#include "server/jobs/tokenizer_sandbox.h"
#include "server/models/text_encoder.h"

namespace kaizen::jobs {

// A text dataset's rows in record order.
struct LabelledTexts {
  std::vector<std::string> texts;
  std::vector<int64_t> labels;
  std::vector<std::string> class_names;
};

// Every text record of `file`. DataLoss naming the record when one fails its
// CRC; FailedPrecondition when the file holds images.
absl::StatusOr<LabelledTexts> ReadTextRecords(const datasets::RecordFile& file);

// Whether a job with `base_model` builds a new encoder: transformer-small,
// which is not stored (it has neither weights nor a tokenizer until a job
// trains them).
bool BuildsNewTextEncoder(const kaizen::v1::StartFineTuneRequest& request);

// The checks StartFineTune makes on a job whose dataset holds text, before
// anything is stored. `base` is the stored base model, or nullptr when the
// job builds a new encoder. InvalidArgument naming the field: a strategy
// other than FEATURE_EXTRACTION, FINE_TUNE, FULL, SCRATCH, DISTILL and
// MASKED_LM (INCREMENTAL reads images only in this version), distillation
// options that ResolveDistillation refuses, a new encoder for anything but
// SCRATCH, DISTILL or MASKED_LM, a base without text_input (an image
// model), tuning, an image-only hyperparameter (augmentation, mixed
// precision, an MLP head, head warm-up, drop_last_fraction, a validation
// split), text options out of range.
absl::Status CheckTextJob(const kaizen::v1::StartFineTuneRequest& request,
                          const kaizen::v1::Model* base);

// The hyperparameters a text job runs with: DefaultTextHyperparameters
// (MASKED_LM: lr 5e-4, warm-up then linear decay) for 10 epochs of 32,
// every field the request sets taking its place; text options completed
// with their defaults (max_length from `base` when given).
kaizen::v1::Hyperparameters ResolveTextHyperparameters(
    const kaizen::v1::StartFineTuneRequest& request, const kaizen::v1::Model* base);

// SentencePiece's unigram model trained on `texts` (line breaks made
// spaces), at most `vocab_size` pieces: unk 0, BOS 1, EOS 2, padding 3 and
// [MASK] 4 (user-defined), and the TextInput that frames with them to
// `max_length`. Trained in `sandbox`'s process, on at most 100,000 texts
// (spread evenly through a larger dataset) of at most 16 KiB each and
// 256 MiB in all; the same texts give the same pieces. InvalidArgument when
// the library refuses the texts; ResourceExhausted naming the flag when
// the trainer runs past a limit; Internal when it cannot be started.
struct TrainedTokenizer {
  std::string model_file;
  kaizen::v1::TextInput input;
  // How the trainer ran: "12.3 s, 210 MiB peak".
  std::string cost;
};
absl::StatusOr<TrainedTokenizer> TrainTextTokenizer(const std::vector<std::string>& texts,
                                                    int32_t vocab_size, int32_t max_length,
                                                    const TokenizerSandbox& sandbox);

// A version, as a text job writes one after each epoch (a MASKED_LM job's is
// the encoder it pretrains, with metrics masked_lm_loss and, with
// validation texts, val_masked_lm_loss).
struct TextJobCheckpoint {
  torch::jit::Module module;               // CPU, eval mode
  kaizen::v1::Model metadata;              // as TextJobOutput's, with the epoch's figures
  const std::string* tokenizer = nullptr;  // the file the model carries
  int32_t epoch = 0;                       // counted from 1
  bool is_best = false;                    // TextTrainerOptions::Checkpoint's, or PretrainEpoch's
  std::string resume_state;                // to continue from it (TextJobInputs::resume)
};

// TextJobInputs::Teacher and ::Incremental, at namespace scope for the
// reason TextDistillation is (text_trainer.h).
struct TextJobTeacher {
  torch::jit::Module module;
  kaizen::v1::Model metadata;
  std::string tokenizer;
  double temperature = 4;
  double alpha = 0.7;
};
struct TextJobIncremental {
  torch::jit::Module previous;
  kaizen::v1::Model previous_metadata;
  std::string previous_tokenizer;
  double temperature = 2;
  double weight = 1;
};

struct TextJobInputs {
  kaizen::v1::Strategy strategy = kaizen::v1::STRATEGY_UNSPECIFIED;
  // ResolveTextHyperparameters's.
  kaizen::v1::Hyperparameters hyperparameters;
  // The stored base (module on the CPU, its metadata and tokenizer file);
  // unset when the job builds a new transformer-small.
  std::optional<torch::jit::Module> base;
  kaizen::v1::Model base_metadata;
  std::string base_tokenizer;
  LabelledTexts train;
  std::optional<LabelledTexts> validation;
  // Where a new tokenizer is trained.
  TokenizerSandbox tokenizer_sandbox;
  torch::Device device = torch::kCPU;
  std::function<bool()> should_stop;
  std::function<void(const kaizen::v1::EpochMetrics&)> on_epoch;
  std::function<void(const std::string&)> on_message;
  // DISTILL: the teacher (a text classifier with the dataset's classes in
  // the same order; on the CPU), its metadata and tokenizer, and the
  // distillation's temperature and alpha. Its logits on the training texts
  // (tokenised with its own tokenizer) are computed once, in eval mode; a
  // stop during that pass ends the run (stopped) before training.
  using Teacher = TextJobTeacher;
  std::optional<Teacher> teacher;
  // INCREMENTAL: the previous classifier (module on the CPU, metadata,
  // tokenizer; also `base` unless the run resumes), whose classes come first
  // in train.class_names, and IncrementalLoss's temperature and weight (0:
  // no distillation). Its logits on the training texts are computed once, in
  // eval mode; a stop during that pass ends the run (stopped).
  using Incremental = TextJobIncremental;
  std::optional<Incremental> incremental;
  // The training continues from a checkpoint of an earlier run of the same
  // job: its version's module, metadata, tokenizer and resume bytes. Nothing
  // is built before it (no tokenizer is trained); `base` is not used.
  struct Resume {
    torch::jit::Module module;
    kaizen::v1::Model metadata;
    std::string tokenizer;
    std::string state;
  };
  std::optional<Resume> resume;
  // After each epoch. An error ends the run with it.
  std::function<absl::Status(const TextJobCheckpoint&)> on_checkpoint;
  // A classifier's training (not MASKED_LM's) runs as `world_size`
  // processes when above 1 (LocalDataParallel::StartText, in a folder
  // `group_name` under data_parallel.scratch_dir): this one is rank 0, which
  // tokenises, computes the teacher's or previous classifier's logits and
  // writes the checkpoints; each kaizen-worker gets `threads_per_worker`
  // intra-op threads. Announced and concluded through on_message.
  int world_size = 1;
  // The server's default rather than the request's: a group whose files do
  // not fit the scratch volume then trains in one process instead.
  bool world_size_is_default = false;
  DataParallelOptions data_parallel;
  int threads_per_worker = 1;
  std::string group_name;
};

struct TextJobOutput {
  // After the last epoch (with on_checkpoint set, it was handed out as the
  // last checkpoint too).
  torch::jit::Module module;     // CPU, eval mode
  kaizen::v1::Model metadata;    // text_input, head, classes, parameter_count, metrics
  std::string tokenizer;         // the file the model carries
  int32_t epochs_completed = 0;  // a resumed run's earlier epochs included
  bool stopped = false;
  // DISTILL with validation texts: the teacher's accuracy on them and the
  // student's after the last epoch (validation_examples 0 without).
  double teacher_val_accuracy = 0;
  // DISTILL: the median time of a forward pass of one text (the training
  // text of median length, tokenised by each model's own tokenizer), side
  // by side on the job's device (training/forward_latency.h); rounds 0 and
  // latency_error set when it could not be measured.
  double teacher_latency_ms = 0;
  double student_latency_ms = 0;
  int32_t latency_rounds = 0;
  int64_t teacher_latency_tokens = 0;
  int64_t student_latency_tokens = 0;
  std::string latency_error;
  double student_val_accuracy = 0;
  int64_t validation_examples = 0;
};

// Runs the job: tokenises the texts (texts the tokenizer refuses are named
// by row), builds or copies the encoder, trains, and describes the result.
// DISTILL builds or copies the student as SCRATCH or FULL would, and trains
// every parameter on the teacher's softened logits and the labels.
// INCREMENTAL continues the previous classifier with its head grown to the
// merged classes, on the new texts and the replayed ones (both in `train`).
// MASKED_LM's output is the encoder with a head for the dataset's classes,
// untrained, and metrics masked_lm_loss (and val_masked_lm_loss with
// validation texts).
absl::StatusOr<TextJobOutput> RunTextJob(const TextJobInputs& inputs);

// INCREMENTAL's figures: a classifier's accuracy on the texts of
// `old_classes`, on the others, and on all, matched by class name (a text
// whose class the classifier lacks counts as wrong).
struct OldAndNewAccuracy {
  int64_t old_examples = 0;
  int64_t new_examples = 0;
  double old_accuracy = 0;
  double new_accuracy = 0;
  double all_accuracy = 0;
};
absl::StatusOr<OldAndNewAccuracy> ClassifierOldAndNewAccuracy(
    torch::jit::Module& module, const kaizen::v1::Model& model, const std::string& tokenizer,
    const LabelledTexts& texts, const std::vector<std::string>& old_classes, int64_t batch_size,
    const std::function<bool()>& should_stop);

// `module`'s accuracy, top-`top_k` accuracy, per-class figures and confusion
// on `test` (classes matched to `model`'s by name), batches of `batch_size`
// padded to their longest. Cancelled when should_stop.
absl::StatusOr<kaizen::v1::Evaluation> EvaluateTextClassifier(
    torch::jit::Module& module, const kaizen::v1::Model& model, const std::string& tokenizer,
    const LabelledTexts& test, int64_t batch_size, const std::function<bool()>& should_stop,
    int32_t top_k = 5);

}  // namespace kaizen::jobs
