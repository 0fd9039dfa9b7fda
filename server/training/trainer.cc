#include "server/training/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <set>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "server/common/failure_cause.h"
#include "server/common/sha256.h"
#include "server/common/status_macros.h"
#include "server/imaging/normalizer.h"
#include "server/models/builtin_models.h"
#include "server/models/torch_errors.h"
#include "server/training/augmenter.h"
#include "server/training/batch_sampler.h"
#include "server/training/batchnorm_recalibration.h"
#include "server/training/early_stopping.h"
#include "server/training/exemplar_memory.h"
#include "server/training/forward_cut.h"
#include "server/training/freezing.h"
#include "server/training/head.h"
#include "server/training/image_set.h"
#include "server/training/image_source.h"
#include "server/training/loss.h"
#include "server/training/lr_schedule.h"
#include "server/training/optimizer_factory.h"
#include "server/training/parameter_init.h"
#include "server/training/resume_state.h"
#include "server/training/strategy.h"
#include "server/training/teacher.h"

namespace kaizen::training {
namespace {

using Clock = std::chrono::steady_clock;

// Independent random streams derived from the job's seed (DeriveSeed).
constexpr uint64_t kTorchStream = 2;
constexpr uint64_t kAugmentStream = 3;
constexpr uint64_t kHeadStream = 4;
constexpr uint64_t kInitStream = 5;
constexpr uint64_t kSplitStream = 6;
constexpr uint64_t kExemplarStream = 7;
constexpr uint64_t kRankStream = 8;
constexpr uint64_t kResumeStream = 9;

// Images per forward pass when caching features, evaluating or
// recalibrating BatchNorm: up to kInferenceBatch, fewer for large inputs so
// that a pass's input stays within kInferenceInputBytes of floats (at
// 224x224 RGB, 20 images: a resnet's activations for 256 would take GBs).
// Large batches of large images are slower, not only larger: torchvision's
// resnet18 at 224x224 on 2 cores (eval, no grad) ran 67-69 images/s at
// batches of 8 to 24, 58 at 32, 53 at 48-55 and 44 at 64 (bench/RESULTS.md).
constexpr int64_t kInferenceBatch = 256;
constexpr int64_t kMinInferenceBatch = 16;
// How long the other ranks of an INCREMENTAL group wait for rank 0 to
// choose the exemplars (ShareReplay).
constexpr absl::Duration kReplayChoiceTimeout = absl::Hours(24);
constexpr int64_t kInferenceInputBytes = int64_t{12} << 20;
// BatchNorm recalibration looks at this many training images at most (evenly
// spaced through the set): a few thousand pin the statistics down, and on a
// large dataset the pass stays a small fraction of an epoch.
constexpr int64_t kRecalibrationImages = 4096;
// Streamed data: the most bytes of images decoded ahead of their use.
constexpr int64_t kMaxPrefetchBytes = int64_t{256} << 20;

// Thrown between two chunks of a whole-dataset pass at the start of an epoch
// (feature statistics, the feature cache, the frozen-prefix cache) when
// should_stop asks to stop: on 50,000 images at 224x224 such a pass takes
// minutes, and a cancel, pause or shutdown should not wait for it.
// StartEpoch catches it. Not a std::exception, so that no handler of a
// pass's own failures (UsePrefixCache falls back on those) takes it for one.
struct PassStopped {};
// Thrown from such a pass when a collective of the group sharing it fails
// (the group is broken: the job fails with its status). Not a
// std::exception either, for the same reason.
class GroupError {
 public:
  explicit GroupError(absl::Status status) : status_(std::move(status)) {}
  const absl::Status& status() const { return status_; }

 private:
  absl::Status status_;
};
// Without validation or early stopping, a checkpoint is written (with
// BatchNorm statistics recomputed) after the last epoch and after about this
// many epochs spread through the run, so that the versions served while a
// job runs are sound too. At 1 image per class a run is 300 one-step epochs:
// a checkpoint after each (a registry version, fsync, a hot swap) and a
// BatchNorm pass after each would cost more than the training.
constexpr int32_t kCheckpointsPerRun = 10;
// A validation split that would leave a class fewer training images than this
// is not taken. Below it is the few-shot regime (1-5 images per class, where
// a 0.2 split leaves 0-4), in which every image counts more for training than
// for a metric on one image per class; 10 per class at 0.2 keeps 8 and splits.
constexpr int64_t kMinTrainImagesPerClass = 8;
// Feature standardisation: a feature whose spread is below this share of the
// typical feature's (a dead ReLU unit) is scaled like the typical feature
// rather than blown up.
constexpr double kMinStdShare = 1e-3;
// FP16 dynamic loss scaling (there is no C++ GradScaler).
constexpr double kInitialLossScale = 65536.0;
constexpr int kLossScaleGrowthInterval = 2000;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// A generator's whole state as bytes (CPU: the Mersenne Twister and its
// cached normal; CUDA: the Philox seed and offset), for an exact resume
// between two steps.
std::string SaveGenerator(at::Generator gen) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  const at::Tensor state = gen.get_state().contiguous();
  return std::string(reinterpret_cast<const char*>(state.data_ptr<uint8_t>()),
                     static_cast<size_t>(state.numel()));
}

// Throws (a LibTorch error) when `bytes` is not a state of this kind of
// generator.
void RestoreGenerator(at::Generator gen, const std::string& bytes) {
  at::Tensor state = torch::empty({static_cast<int64_t>(bytes.size())}, torch::kUInt8);
  if (!bytes.empty()) std::memcpy(state.data_ptr<uint8_t>(), bytes.data(), bytes.size());
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

// Autocast on CUDA for the lifetime of the object; nothing elsewhere.
class AutocastScope {
 public:
  AutocastScope(bool enabled, at::ScalarType dtype) : enabled_(enabled) {
    if (!enabled_) return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    previous_ = at::autocast::is_autocast_enabled(at::kCUDA);
    previous_dtype_ = at::autocast::get_autocast_dtype(at::kCUDA);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
    at::autocast::set_autocast_dtype(at::kCUDA, dtype);
#else
    previous_ = at::autocast::is_enabled();
    previous_dtype_ = at::autocast::get_autocast_gpu_dtype();
    at::autocast::set_enabled(true);
    at::autocast::set_autocast_gpu_dtype(dtype);
#endif
  }
  ~AutocastScope() {
    if (!enabled_) return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    at::autocast::set_autocast_enabled(at::kCUDA, previous_);
    at::autocast::set_autocast_dtype(at::kCUDA, previous_dtype_);
#else
    at::autocast::set_enabled(previous_);
    at::autocast::set_autocast_gpu_dtype(previous_dtype_);
#endif
    at::autocast::clear_cache();
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool enabled_;
  bool previous_ = false;
  at::ScalarType previous_dtype_ = at::kFloat;
};

// The epoch in progress: its running sums, when it started and the
// generator its augmentation draws from.
struct EpochRun {
  int32_t epoch = 0;  // counted from 0
  bool use_cache = false;
  bool use_prefix = false;  // the frozen-prefix cache (UsePrefixCache)
  // should_stop asked to stop during the epoch's opening passes: the epoch
  // stops before its first step (RunSteps).
  bool stopped_before_steps = false;
  int64_t first_batch = 0;  // > 0 when resuming within the epoch
  double loss_sum = 0;
  int64_t correct = 0;
  int64_t seen = 0;
  double lr_now = 0;
  Clock::time_point start;
  at::Generator augment_gen;
};

struct Evaluation {
  double loss = 0;
  double accuracy = 0;
  std::vector<int64_t> correct;  // per class
  std::vector<int64_t> total;
};

class Trainer {
 public:
  Trainer(const TrainerOptions& options, const TrainingData& data, const Callbacks& callbacks)
      : options_(options),
        hp_(options.hyperparameters),
        data_(data),
        callbacks_(callbacks),
        device_(options.device) {}

  absl::StatusOr<TrainResult> Run();

  // Where the trainer is, for error messages ("epoch 3 step 12").
  const std::string& where() const { return where_; }

 private:
  absl::Status CheckInputs();
  absl::Status BuildModel();
  absl::Status BuildData();
  // Record-file data: the sources for training rows `train_rows` (and
  // validation rows `val_rows`) of the training file, in memory or streamed.
  absl::Status BuildRecordSources(const std::vector<int64_t>& shape,
                                  std::vector<int64_t> train_rows, std::vector<int64_t> val_rows);
  absl::Status BuildOptimizer();
  // The split of rows with `labels` into training and validation rows; a
  // split that would leave a class too few training images is dropped, with
  // a note (all rows train).
  absl::Status SplitValidation(const std::vector<int32_t>& labels, std::vector<int64_t>* train_rows,
                               std::vector<int64_t>* val_rows);
  void BuildFeatureCache();
  // Whether this epoch can run from the frozen-prefix cache; builds it the
  // first time it can (TrainerOptions::max_prefix_cache_bytes).
  bool UsePrefixCache();
  // UsePrefixCache's work, which may throw.
  bool BuildPrefixCache();
  // cut_->Prefix of every image of `set`, on the CPU.
  torch::Tensor AllPrefixes(ImageSource& set);
  // The backbone's features of every image of `set`, in eval mode.
  torch::Tensor AllFeatures(ImageSource& set);
  // FEATURE_EXTRACTION: the mean and std of the training features, which the
  // head's input is standardised with (and the checkpoint's head folds in).
  void SetFeatureStandardization(const torch::Tensor& train_features);
  torch::Tensor HeadInput(const torch::Tensor& features) const;
  std::string EncodeFeatureStandardization() const;
  absl::Status RestoreFeatureStandardization(const std::string& bytes);
  // Recomputes the running statistics of the BatchNorm layers that train this
  // epoch in `backbone` (the training one, or a checkpoint's copy on
  // `device`) on the un-augmented training images.
  // With `use_prefix` (the training backbone itself) from the frozen-prefix
  // cache.
  // `shared`: every rank of the group calls it on the same model and runs
  // its share of the batches (when there are enough for every rank).
  absl::StatusOr<int> RecalibrateBatchNorm(torch::jit::Module backbone, const torch::Device& device,
                                           bool use_prefix, bool shared);
  // Whether epoch `epoch` (0-based) ends with a checkpoint, whose BatchNorm
  // statistics are recomputed first.
  bool CheckpointsAfter(int32_t epoch) const;
  void Note(const std::string& message);
  // Seeds the epoch's generators, freezes what this epoch keeps fixed and
  // builds or drops the feature cache.
  EpochRun StartEpoch(int32_t epoch);
  // Between two chunks of a whole-dataset pass: throws PassStopped when
  // should_stop asks to stop while StartEpoch runs its opening passes.
  void StopPoint() const;
  // Continues `run` at the step where a checkpoint taken between two steps
  // stopped, with the sums and the random generators as they were.
  void ResumeWithinEpoch(const EpochPosition& at, EpochRun* run);
  // Runs the epoch's remaining steps; true when should_stop ended it (after
  // a checkpoint that resumes at that step).
  absl::StatusOr<bool> RunSteps(EpochRun* run);
  absl::Status CheckpointStoppedAt(const EpochRun& run, int64_t batch, int64_t global_step);
  // One update on `batch`, this rank's share of a global batch of
  // `global_size` examples (the whole batch without a group).
  absl::Status Step(const std::vector<int64_t>& batch, int64_t global_size, int64_t b,
                    int64_t global_step, EpochRun* run);
  // Data parallel: every rank's parameters and buffers become rank 0's.
  absl::Status SynchronizeModel(bool parameters);
  // Data parallel: true on every rank when rank 0's `flag` is.
  absl::StatusOr<bool> RankZeroSays(bool flag);
  // The seed of this rank's random stream (rank 0's is the seed itself, so
  // that one process trains as before).
  uint64_t RankSeed(uint64_t stream, uint64_t epoch) const;
  void ReportStep(const EpochRun& run, int64_t global_step, double loss_value);
  // Evaluates, records the metrics and the best epoch, checkpoints. Returns
  // true when early stopping ends training.
  absl::StatusOr<bool> FinishEpoch(const EpochRun& run, TrainResult* result);
  // Recalibrates BatchNorm when this epoch's checkpoint gets sound
  // statistics (last_recalibrated_), then evaluates.
  absl::StatusOr<kaizen::v1::EpochMetrics> EpochMetricsOf(const EpochRun& run);
  torch::Tensor Features(const torch::Tensor& unit_images);
  // `x` in the memory format the backbone runs in (channels_last).
  torch::Tensor ModelInput(const torch::Tensor& x) const;
  // The student's logits for training rows `idx` (augmented when
  // augmentation is on) and, for DISTILL, the teacher's on the same images
  // in `*teacher_logits`.
  torch::Tensor TrainLogits(const std::vector<int64_t>& batch, const torch::Tensor& idx,
                            bool use_cache, bool use_prefix, at::Generator& gen,
                            torch::Tensor* teacher_logits);
  // DISTILL: the teacher on the student's input, and its logit cache when
  // the training images never change (no augmentation).
  absl::Status BuildTeacher();
  // `per_batch` (unit images -> a row per image) over every row of `set`:
  // the table [N, ...] on `device`, filled in place chunk by chunk (never
  // the chunks and their concatenation at once). In a group of at most N
  // ranks each rank runs its chunks alone (distributed::ChunksOfRank) and one sum over
  // the ranks fills in the others' rows, zeros here, so every rank holds
  // the same table, bit for bit, for a world_size-th of the work; a failed
  // sum throws GroupError. Stops between chunks (StopPoint).
  torch::Tensor TablePass(ImageSource& set,
                          const std::function<torch::Tensor(const torch::Tensor&)>& per_batch,
                          const torch::Device& device);
  // DISTILL: the teacher's accuracy on the validation images.
  double TeacherAccuracy(ImageSource& set);
  // INCREMENTAL with rehearsal: the old memory (replayed with the training
  // images, class-balanced) and the new one (stored with every checkpoint).
  // In a group, rank 0 alone chooses (and stores the next memory); the
  // others receive the images it replays (ShareReplay).
  absl::Status BuildRehearsal();
  // Rank 0's replayed images and labels become every rank's (alone: none
  // to share).
  absl::Status ShareReplay(ImageSet* replay);
  // Appends the replayed images to the training images.
  void Replay(const ImageSet& replay);
  // INCREMENTAL: the order in which the images of one class (`images`, a
  // class's rows) become exemplars.
  std::vector<int64_t> ExemplarOrder(const ImageSet& images, int64_t k, int64_t label);
  // INCREMENTAL: the previous model's backbone features (the head's input).
  torch::Tensor PreviousFeatures(const ImageSet& set);
  // INCREMENTAL: the previous model's accuracy on the validation images.
  void ScorePrevious(TrainResult* result);
  Evaluation Evaluate(ImageSource& set, const torch::Tensor& cached_features,
                      const torch::Tensor& cached_prefixes = torch::Tensor());
  void SetLearningRates(double factor);
  void ClearGradients();
  // Returns false when the step was skipped (FP16 overflow). With a group,
  // the gradients are summed over the ranks, each weighted by `share` (its
  // examples / the global batch's); an undefined `loss` (no examples on this
  // rank) contributes zeros.
  absl::StatusOr<bool> BackwardAndStep(const torch::Tensor& loss, double share = 1.0);
  absl::StatusOr<Checkpoint> MakeCheckpoint(int32_t epochs_completed, int64_t global_step,
                                            bool is_best, int bn_recalibrated);
  // The generators that random operations in a step draw from.
  at::Generator TorchGenerator() const { return at::globalContext().defaultGenerator(at::kCPU); }
  std::optional<at::Generator> CudaGenerator() const {
    if (!device_.is_cuda()) return std::nullopt;
    return at::globalContext().defaultGenerator(device_);
  }
  std::string MetricName() const;
  bool MetricIsMaximised() const { return MetricName() == "val_accuracy"; }
  double MetricValue(const kaizen::v1::EpochMetrics& m) const;

  const TrainerOptions& options_;
  kaizen::v1::Hyperparameters hp_;
  const TrainingData& data_;
  const Callbacks& callbacks_;
  torch::Device device_;
  std::string where_ = "setup";

  ResumeState state_;
  bool resuming_ = false;
  int64_t num_classes_ = 0;
  std::vector<std::string> class_names_;
  SplitModel split_;
  kaizen::v1::Model base_metadata_;
  std::set<std::string> trainable_backbone_;
  std::vector<torch::Tensor> head_params_;
  std::vector<torch::Tensor> backbone_params_;
  std::vector<double> base_lrs_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;

  ImageSource train_;
  ImageSource val_;
  int64_t inference_batch_ = kInferenceBatch;  // see kInferenceInputBytes
  std::optional<imaging::Normalizer> normalizer_;
  std::optional<Augmenter> augmenter_;
  std::optional<BatchSampler> sampler_;
  std::optional<LrSchedule> schedule_;
  torch::Tensor train_features_;  // the feature cache; undefined when stale
  torch::Tensor val_features_;
  // The frozen-prefix cache: the backbone cut before its first trainable
  // block, and the prefix's output for every image (CPU).
  std::optional<ForwardCut> cut_;
  torch::Tensor train_prefixes_;
  torch::Tensor val_prefixes_;
  bool prefix_decided_ = false;
  // StartEpoch's opening passes may stop at StopPoint.
  bool passes_may_stop_ = false;
  // FEATURE_EXTRACTION standardises the head's input (see
  // SetFeatureStandardization); a job resumed from a checkpoint written
  // before it did keeps training as it started.
  bool standardize_ = false;
  torch::Tensor feature_mean_;  // [in_features] on device_
  torch::Tensor feature_std_;
  // BatchNorm layers of the backbone in training mode this epoch.
  std::vector<std::string> training_batchnorms_;
  int64_t batchnorm_layers_ = 0;  // all of them, trained or frozen
  int last_recalibrated_ = 0;     // by the last epoch's checkpoint
  std::vector<std::string> notes_;
  int64_t backbone_batches_ = 0;
  int64_t steps_per_epoch_ = 0;
  int64_t total_steps_ = 0;
  Clock::time_point run_start_;
  int64_t steps_this_run_ = 0;

  std::unique_ptr<Teacher> teacher_;
  std::optional<TeacherLogitCache> teacher_cache_;
  // INCREMENTAL.
  int64_t old_classes_ = 0;
  std::optional<SplitModel> previous_split_;  // for herding features
  std::shared_ptr<const datasets::DecodedDataset> next_memory_;
  int64_t replayed_ = 0;
  std::string training_set_sha256_;  // TrainerOptions::digest_training_set

  bool amp_ = false;
  bool fp16_ = false;
  at::ScalarType amp_dtype_ = at::kBFloat16;
};

absl::Status Trainer::CheckInputs() {
  RETURN_IF_ERROR(CheckStrategyAvailable(options_.strategy));
  const bool in_memory = data_.train != nullptr;
  if ((in_memory && (data_.train_file != nullptr || data_.validation_file != nullptr)) ||
      (!in_memory && data_.validation != nullptr)) {
    return absl::InvalidArgumentError(
        "the training and validation data must both be decoded datasets or both record files");
  }
  if (in_memory ? data_.train->records.empty()
                : data_.train_file == nullptr || data_.train_file->size() == 0) {
    return absl::InvalidArgumentError("the training dataset has no images");
  }
  class_names_ = in_memory ? data_.train->class_names : data_.train_file->class_names();
  num_classes_ = static_cast<int64_t>(class_names_.size());
  if (num_classes_ < 2) {
    return absl::InvalidArgumentError("the training dataset needs at least two classes");
  }
  if ((data_.validation != nullptr && data_.validation->class_names != class_names_) ||
      (!in_memory && data_.validation_file != nullptr &&
       data_.validation_file->class_names() != class_names_)) {
    return absl::InvalidArgumentError(
        "the validation dataset's class names differ from the training dataset's");
  }
  if (options_.strategy == kaizen::v1::STRATEGY_DISTILL && !options_.distillation) {
    return absl::InvalidArgumentError("STRATEGY_DISTILL needs a teacher model");
  }
  if (options_.strategy == kaizen::v1::STRATEGY_INCREMENTAL) {
    if (!options_.incremental) {
      return absl::InvalidArgumentError("STRATEGY_INCREMENTAL needs the previous model");
    }
    const auto& prev = options_.incremental->previous_metadata.class_names();
    old_classes_ = prev.size();
    if (old_classes_ < 1 || old_classes_ > num_classes_ ||
        !std::equal(prev.begin(), prev.end(), class_names_.begin())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the INCREMENTAL training data's class list [", absl::StrJoin(class_names_, ", "),
          "] must start with the previous model's classes [", absl::StrJoin(prev, ", "),
          "], in order"));
    }
  }
  if (options_.base_metadata.input_shape_size() != 3) {
    return absl::InvalidArgumentError("the base model's metadata has no [C, H, W] input_shape");
  }
  if (hp_.epochs() < 1 || hp_.batch_size() < 1 || !(hp_.learning_rate() > 0)) {
    return absl::InvalidArgumentError(
        "hyperparameters must be resolved (epochs, batch_size, learning_rate > 0)");
  }
  const bool has_validation = data_.validation != nullptr || data_.validation_file != nullptr ||
                              hp_.validation().split() > 0;
  if (hp_.early_stopping().enabled() && !has_validation) {
    return absl::InvalidArgumentError(
        "hyperparameters.early_stopping needs validation data: set validation.split or "
        "validation.dataset");
  }
  if (!options_.resume_state.empty()) {
    ASSIGN_OR_RETURN(state_, DecodeResumeState(options_.resume_state));
    resuming_ = true;
    if (state_.seed != hp_.seed()) {
      return absl::InvalidArgumentError("the resume state belongs to a job with another seed");
    }
  }
  state_.seed = hp_.seed();
  if (device_.is_cuda()) {
    const auto mp = hp_.mixed_precision();
    amp_ = mp == kaizen::v1::MIXED_PRECISION_UNSPECIFIED ||
           mp == kaizen::v1::MIXED_PRECISION_BF16 || mp == kaizen::v1::MIXED_PRECISION_FP16;
    fp16_ = mp == kaizen::v1::MIXED_PRECISION_FP16;
    amp_dtype_ = fp16_ ? at::kHalf : at::kBFloat16;
    if (fp16_ && state_.loss_scale <= 0) state_.loss_scale = kInitialLossScale;
  }
  return absl::OkStatus();
}

absl::Status Trainer::BuildModel() {
  base_metadata_ = options_.base_metadata;
  torch::jit::Module base = options_.base;
  const uint64_t seed = hp_.seed();
  if (options_.strategy == kaizen::v1::STRATEGY_SCRATCH && !resuming_) {
    const auto& shape = base_metadata_.input_shape();
    if (models::IsBuiltinModel(base_metadata_.architecture()) && shape[1] == shape[2]) {
      models::BuiltinOptions builtin;
      builtin.in_channels = shape[0];
      builtin.input_size = shape[1];
      builtin.num_classes = num_classes_;
      builtin.seed = DeriveSeed(seed, kInitStream, 0);
      ASSIGN_OR_RETURN(base, models::CreateBuiltinModel(base_metadata_.architecture(), builtin));
      base_metadata_.mutable_head()->set_module_path("fc");
      base_metadata_.mutable_head()->set_kind(kaizen::v1::HEAD_KIND_LINEAR);
    } else {
      base = DeepCopyModule(base);
      ReinitializeParameters(base, DeriveSeed(seed, kInitStream, 0));
    }
  }
  HeadSpec spec;
  spec.kind = hp_.head().kind();
  spec.num_classes = num_classes_;
  spec.hidden_units = hp_.head().hidden_units();
  spec.dropout = hp_.head().dropout();
  spec.seed = DeriveSeed(seed, kHeadStream, 0);
  if (options_.strategy == kaizen::v1::STRATEGY_INCREMENTAL) {
    // The previous model's head is kept and grows; its kind stays.
    const bool mlp = base.hasattr(kBackboneHeadAttribute) ||
                     base_metadata_.head().kind() == kaizen::v1::HEAD_KIND_MLP;
    spec.kind = mlp ? kaizen::v1::HEAD_KIND_MLP : kaizen::v1::HEAD_KIND_LINEAR;
    if (!resuming_) spec.num_classes = old_classes_;
    ASSIGN_OR_RETURN(split_, SplitClassifier(base, base_metadata_, spec, /*keep_head=*/true));
    if (!resuming_) RETURN_IF_ERROR(GrowHead(spec, num_classes_, &split_));
  } else {
    ASSIGN_OR_RETURN(split_, SplitClassifier(base, base_metadata_, spec, resuming_));
  }
  split_.backbone.to(device_);
  split_.head.to(device_);
  if (options_.channels_last) {
    torch::NoGradGuard no_grad;
    for (torch::Tensor p : split_.backbone.parameters(/*recurse=*/true)) {
      if (p.dim() == 4) p.set_data(p.contiguous(torch::MemoryFormat::ChannelsLast));
    }
  }

  const std::vector<std::string> names = TrainableBackboneParameters(
      split_.backbone, split_.identity_path, options_.strategy, hp_.trainable_blocks());
  trainable_backbone_.insert(names.begin(), names.end());
  for (const auto& p : split_.backbone.named_parameters(/*recurse=*/true)) {
    if (trainable_backbone_.count(p.name)) backbone_params_.push_back(p.value);
  }
  for (const torch::Tensor& p : split_.head.parameters(/*recurse=*/true)) head_params_.push_back(p);
  for (const auto& m : split_.backbone.named_modules()) {
    if (m.value.hasattr("running_mean") && m.value.attr("running_mean").isTensor()) {
      ++batchnorm_layers_;
    }
  }
  standardize_ = options_.strategy == kaizen::v1::STRATEGY_FEATURE_EXTRACTION &&
                 (!resuming_ || !state_.feature_standardization.empty());
  if (resuming_ && standardize_) {
    RETURN_IF_ERROR(RestoreFeatureStandardization(state_.feature_standardization));
  }
  return absl::OkStatus();
}

std::string Trainer::EncodeFeatureStandardization() const {
  // The head's own parameters by position (archive keys cannot hold the
  // dots of "fc1.weight"); named_parameters() has a fixed order.
  // A stop during the first epoch's feature pass leaves no statistics yet:
  // empty tensors, and the resumed job computes them.
  torch::serialize::OutputArchive archive;
  archive.write("mean", feature_mean_.defined() ? feature_mean_.cpu() : torch::empty({0}));
  archive.write("std", feature_std_.defined() ? feature_std_.cpu() : torch::empty({0}));
  int i = 0;
  for (const torch::Tensor& p : split_.head.parameters(/*recurse=*/true)) {
    archive.write(absl::StrCat("head", i++), p.detach().cpu());
  }
  std::ostringstream out;
  archive.save_to(out);
  return out.str();
}

absl::Status Trainer::RestoreFeatureStandardization(const std::string& bytes) {
  try {
    std::istringstream in(bytes);
    torch::serialize::InputArchive archive;
    archive.load_from(in, torch::kCPU);
    archive.read("mean", feature_mean_);
    archive.read("std", feature_std_);
    if (feature_mean_.numel() == 0) {  // not computed yet (EncodeFeatureStandardization)
      if (feature_std_.numel() != 0 || state_.global_step != 0) {
        return absl::InvalidArgumentError(
            "the resume state's feature standardisation is damaged: no means, but standard "
            "deviations or training steps");
      }
      feature_mean_ = torch::Tensor();
      feature_std_ = torch::Tensor();
    } else {
      feature_mean_ = feature_mean_.to(device_);
      feature_std_ = feature_std_.to(device_);
    }
    torch::NoGradGuard no_grad;
    int i = 0;
    for (torch::Tensor& p : head_params_) {
      torch::Tensor saved;
      archive.read(absl::StrCat("head", i++), saved);
      p.copy_(saved);
    }
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the resume state's feature standardisation is damaged: ", models::TorchErrorSummary(e)));
  }
  if (feature_mean_.defined() &&
      (feature_mean_.dim() != 1 || feature_mean_.size(0) != split_.in_features ||
       !feature_std_.sizes().equals(feature_mean_.sizes()))) {
    return absl::InvalidArgumentError(
        "the resume state's feature standardisation does not fit the model's features");
  }
  return absl::OkStatus();
}

absl::Status Trainer::BuildData() {
  const std::vector<int64_t> shape(base_metadata_.input_shape().begin(),
                                   base_metadata_.input_shape().end());
  const double input_bytes = 4.0 * static_cast<double>(shape[0]) * static_cast<double>(shape[1]) *
                             static_cast<double>(shape[2]);
  inference_batch_ = static_cast<int64_t>(
      std::clamp(static_cast<double>(kInferenceInputBytes) / input_bytes,
                 static_cast<double>(kMinInferenceBatch), static_cast<double>(kInferenceBatch)));
  std::vector<int32_t> labels;
  if (data_.train != nullptr) {
    labels.reserve(data_.train->records.size());
    for (const auto& r : data_.train->records) labels.push_back(r.label);
  } else {
    labels.reserve(data_.train_file->size());
    for (uint64_t i = 0; i < data_.train_file->size(); ++i) {
      labels.push_back(data_.train_file->info(i).label);
    }
  }
  std::vector<int64_t> train_rows(labels.size()), val_rows;
  std::iota(train_rows.begin(), train_rows.end(), 0);
  const bool separate_validation = data_.validation != nullptr || data_.validation_file != nullptr;
  if (!separate_validation && hp_.validation().split() > 0) {
    RETURN_IF_ERROR(SplitValidation(labels, &train_rows, &val_rows));
  }
  if (data_.train != nullptr) {
    ASSIGN_OR_RETURN(ImageSet all, ConvertDataset(*data_.train, shape));
    ImageSet val;
    if (data_.validation != nullptr) {
      ASSIGN_OR_RETURN(val, ConvertDataset(*data_.validation, shape));
    } else if (!val_rows.empty()) {
      val = Subset(all, val_rows);
    }
    ImageSet train = train_rows.size() == labels.size() ? std::move(all) : Subset(all, train_rows);
    train_ = ImageSource(std::move(train), device_);
    val_ = ImageSource(std::move(val), device_);
  } else {
    RETURN_IF_ERROR(BuildRecordSources(shape, std::move(train_rows), std::move(val_rows)));
  }
  normalizer_.emplace(base_metadata_.normalization(), shape[0], device_);
  RETURN_IF_ERROR(BuildRehearsal());
  if (options_.digest_training_set && !train_.streamed()) {
    const ImageSet& set = *train_.in_memory();
    common::Sha256 sha;
    for (const torch::Tensor& t : {set.images, set.labels}) {
      const torch::Tensor host = t.cpu().contiguous();
      sha.Update(host.data_ptr(), host.nbytes());
    }
    training_set_sha256_ = sha.HexDigest();
  }
  augmenter_.emplace(hp_.augmentation());
  sampler_.emplace(train_.size(), hp_.batch_size(), hp_.drop_last_fraction(), hp_.seed());
  schedule_.emplace(hp_.schedule(), sampler_->batches_per_epoch(), hp_.epochs());
  return absl::OkStatus();
}

absl::Status Trainer::BuildRecordSources(const std::vector<int64_t>& shape,
                                         std::vector<int64_t> train_rows,
                                         std::vector<int64_t> val_rows) {
  std::shared_ptr<const datasets::RecordFile> val_file = data_.train_file;
  if (data_.validation_file != nullptr) {
    val_file = data_.validation_file;
    val_rows.resize(data_.validation_file->size());
    std::iota(val_rows.begin(), val_rows.end(), 0);
  }
  // In doubles: a model may declare any input shape.
  const double per_image =
      static_cast<double>(shape[0]) * static_cast<double>(shape[1]) * static_cast<double>(shape[2]);
  const auto images = static_cast<int64_t>(train_rows.size() + val_rows.size());
  const double mib = per_image * static_cast<double>(images) / (1 << 20);
  const bool stream = per_image * static_cast<double>(images) >
                      static_cast<double>(options_.max_image_memory_bytes);
  if (stream && options_.incremental) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "STRATEGY_INCREMENTAL holds its images in memory: the %d images convert to %.0f MiB at "
        "the model's input %dx%dx%d, more than the %d MiB a job may hold "
        "(--max_job_image_memory_mb)",
        images, mib, shape[0], shape[1], shape[2], options_.max_image_memory_bytes >> 20));
  }
  RecordLoader::Options loader;
  loader.input_shape = shape;
  loader.batch_size = hp_.batch_size();
  loader.drop_last_fraction = hp_.drop_last_fraction();
  loader.seed = hp_.seed();
  loader.threads = options_.loader_threads;
  loader.prefetch_batches = options_.prefetch_batches;
  loader.decode_limits = options_.decode_limits;
  // The batches decoded ahead (evaluation reads inference_batch_ images at a
  // time) stay within this many bytes, at least one batch.
  loader.max_prefetch_bytes = kMaxPrefetchBytes;
  const auto make = stream ? &ImageSource::Streamed : &ImageSource::Load;
  ASSIGN_OR_RETURN(train_, make(data_.train_file, std::move(train_rows), loader, device_));
  if (!val_rows.empty()) {
    ASSIGN_OR_RETURN(val_, make(val_file, std::move(val_rows), loader, device_));
  }
  if (stream) {
    Note(absl::StrFormat(
        "data: the %d images convert to %.0f MiB at the model's input %dx%dx%d, more than the %d "
        "MiB a job may hold (--max_job_image_memory_mb), so they stream from the dataset's record "
        "file, decoded on %d threads up to %d batches ahead of training",
        images, mib, shape[0], shape[1], shape[2], options_.max_image_memory_bytes >> 20,
        std::max(1, options_.loader_threads), std::max(1, options_.prefetch_batches)));
  }
  return absl::OkStatus();
}

torch::Tensor Trainer::PreviousFeatures(const ImageSet& set) {
  torch::NoGradGuard no_grad;
  previous_split_->backbone.eval();
  std::vector<torch::Tensor> chunks;
  for (int64_t begin = 0; begin < set.size(); begin += inference_batch_) {
    const int64_t n = std::min(inference_batch_, set.size() - begin);
    const torch::Tensor x = normalizer_->Normalize(
        imaging::Normalizer::ToUnit(set.images.narrow(0, begin, n).to(device_)));
    chunks.push_back(previous_split_->backbone.forward({x}).toTensor().to(torch::kFloat).cpu());
  }
  return torch::cat(chunks);
}

std::vector<int64_t> Trainer::ExemplarOrder(const ImageSet& images, int64_t k, int64_t label) {
  const kaizen::v1::IncrementalOptions& o = options_.incremental->options;
  if (o.selection() == kaizen::v1::EXEMPLAR_SELECTION_RANDOM) {
    return RandomOrder(images.size(), k, DeriveSeed(o.seed(), kExemplarStream, label));
  }
  return HerdingOrder(PreviousFeatures(images), k);
}

// Rows of `set` whose label is `label`.
std::vector<int64_t> RowsOfClass(const ImageSet& set, int64_t label) {
  if (set.size() == 0) return {};
  const torch::Tensor labels = set.labels.cpu();
  const int64_t* l = labels.data_ptr<int64_t>();
  std::vector<int64_t> rows;
  for (int64_t i = 0; i < set.size(); ++i) {
    if (l[i] == label) rows.push_back(i);
  }
  return rows;
}

ImageSet Concat(const ImageSet& a, const ImageSet& b) {
  if (a.size() == 0) return b;
  if (b.size() == 0) return a;
  return ImageSet{torch::cat({a.images, b.images.to(a.images.device())}),
                  torch::cat({a.labels, b.labels.to(a.labels.device())})};
}

absl::Status Trainer::ShareReplay(ImageSet* replay) {
  if (options_.group == nullptr) return absl::OkStatus();
  const bool root = options_.group->rank() == 0;
  torch::Tensor count = torch::full({1}, root ? replay->size() : 0, torch::kInt64);
  // The other ranks wait here while rank 0 chooses the exemplars, passes of
  // the previous model over the old and new images that grow with the
  // dataset: longer than any collective's timeout. They cannot hang: only
  // the server launches INCREMENTAL groups (kaizen-worker refuses rank 0),
  // its workers die with it and are killed when rank 0 fails.
  RETURN_IF_ERROR(options_.group->Broadcast({count}, 0, kReplayChoiceTimeout));
  const int64_t n = count.item<int64_t>();
  if (n == 0) return absl::OkStatus();
  if (root) {
    replay->images = replay->images.cpu().contiguous();
    replay->labels = replay->labels.cpu().contiguous();
  } else {
    const auto& shape = base_metadata_.input_shape();
    replay->images = torch::empty({n, shape[0], shape[1], shape[2]}, torch::kUInt8);
    replay->labels = torch::empty({n}, torch::kInt64);
  }
  return options_.group->Broadcast({replay->images, replay->labels}, 0);
}

void Trainer::Replay(const ImageSet& replay) {
  replayed_ = replay.size();
  if (replayed_ == 0) return;
  train_.Reset(
      Concat(*train_.in_memory(), ImageSet{replay.images.to(device_), replay.labels.to(device_)}));
}

absl::Status Trainer::BuildRehearsal() {
  if (!options_.incremental || options_.incremental->options.disable_rehearsal()) {
    return absl::OkStatus();
  }
  if (options_.group != nullptr && options_.group->rank() > 0) {
    ImageSet replay;
    RETURN_IF_ERROR(ShareReplay(&replay));
    Replay(replay);
    return absl::OkStatus();
  }
  const TrainerOptions::Incremental& inc = *options_.incremental;
  const kaizen::v1::IncrementalOptions& o = inc.options;
  const std::vector<int64_t> shape(base_metadata_.input_shape().begin(),
                                   base_metadata_.input_shape().end());
  HeadSpec any;
  any.num_classes = 2;
  ASSIGN_OR_RETURN(SplitModel prev, SplitClassifier(inc.previous, inc.previous_metadata, any,
                                                    /*keep_head=*/false));
  prev.backbone.to(device_);
  previous_split_ = std::move(prev);
  const std::vector<std::string> old_names(class_names_.begin(),
                                           class_names_.begin() + old_classes_);

  // The old memory, in the merged class list.
  datasets::DecodedDataset old_memory;
  if (inc.memory != nullptr) {
    old_memory = ShrinkMemory(*inc.memory, class_names_, std::numeric_limits<int64_t>::max());
  } else if (inc.memory_source != nullptr) {
    where_ = "choosing the old classes' exemplars";
    const int64_t k = ExemplarsPerClass(o.exemplars_per_class(), o.max_exemplars(), old_classes_);
    old_memory.class_names = class_names_;
    const datasets::DecodedDataset source =
        ShrinkMemory(*inc.memory_source, old_names, std::numeric_limits<int64_t>::max());
    ASSIGN_OR_RETURN(const ImageSet candidates, ConvertDataset(source, shape));
    for (int64_t c = 0; c < old_classes_; ++c) {
      const ImageSet of_class = Subset(candidates, RowsOfClass(candidates, c));
      if (of_class.size() == 0) continue;
      AppendExemplars(Subset(of_class, ExemplarOrder(of_class, k, c)).images,
                      static_cast<int32_t>(c), &old_memory);
    }
  } else {
    return absl::InvalidArgumentError(
        "rehearsal needs the previous model's memory or the images it was trained on");
  }
  ImageSet old_set;
  if (!old_memory.records.empty()) {
    ASSIGN_OR_RETURN(old_set, ConvertDataset(old_memory, shape));
  }

  // The next memory: old classes keep a prefix of theirs, the others get
  // exemplars of the new training images (never validation images).
  const int64_t per_class =
      ExemplarsPerClass(o.exemplars_per_class(), o.max_exemplars(), num_classes_);
  auto next = std::make_shared<datasets::DecodedDataset>();
  if (inc.resume_memory != nullptr) {
    *next = ShrinkMemory(*inc.resume_memory, class_names_, per_class);
  } else {
    where_ = "choosing the new classes' exemplars";
    *next = ShrinkMemory(old_memory, class_names_, per_class);
    const std::vector<int64_t> kept = MemoryClassCounts(*next);
    for (int64_t c = 0; c < num_classes_; ++c) {
      if (kept[c] > 0) continue;
      const ImageSet& train = *train_.in_memory();
      const ImageSet of_class = Subset(train, RowsOfClass(train, c));
      if (of_class.size() == 0) continue;
      AppendExemplars(Subset(of_class, ExemplarOrder(of_class, per_class, c)).images,
                      static_cast<int32_t>(c), next.get());
    }
  }
  next_memory_ = std::move(next);

  // Replay, class-balanced: each class of the old memory is repeated (in
  // turn) up to the mean number of training images of the new data's
  // classes, so that an old class weighs about as much per epoch as a new.
  std::vector<int64_t> new_counts(num_classes_, 0);
  {
    const torch::Tensor labels = train_.labels().cpu();
    const int64_t* l = labels.data_ptr<int64_t>();
    for (int64_t i = 0; i < train_.size(); ++i) ++new_counts[l[i]];
  }
  int64_t present = 0, total = 0;
  for (int64_t n : new_counts) {
    if (n > 0) ++present;
    total += n;
  }
  int64_t target = present > 0 ? (total + present - 1) / present : 0;
  // The copies are real images: all together they are at most as many as
  // the new training images (many old classes and few new ones would
  // otherwise multiply the training set), so balance gives way there.
  int64_t memory_classes = 0;
  for (int64_t c = 0; c < num_classes_; ++c)
    memory_classes += RowsOfClass(old_set, c).empty() ? 0 : 1;
  if (memory_classes > 0) target = std::min(target, std::max<int64_t>(1, total / memory_classes));
  std::vector<int64_t> replay;
  std::vector<std::string> uncovered;
  for (int64_t c = 0; c < num_classes_; ++c) {
    const std::vector<int64_t> rows = RowsOfClass(old_set, c);
    if (rows.empty()) {
      if (c < old_classes_) uncovered.push_back(class_names_[c]);
      continue;
    }
    const int64_t reps = std::max<int64_t>(static_cast<int64_t>(rows.size()), target);
    for (int64_t i = 0; i < reps; ++i) replay.push_back(rows[i % rows.size()]);
  }
  if (!uncovered.empty()) {
    Note(absl::StrCat("rehearsal: no exemplars of the old class",
                      uncovered.size() > 1 ? "es " : " ", absl::StrJoin(uncovered, ", "),
                      " (the previous datasets hold no images of them); they are protected by "
                      "distillation alone, if it is on"));
  }
  ImageSet replay_set;
  if (!replay.empty()) replay_set = Subset(old_set, replay);
  RETURN_IF_ERROR(ShareReplay(&replay_set));
  Replay(replay_set);
  Note(absl::StrFormat(
      "rehearsal: %d exemplars of %d old classes replayed as %d training images per epoch "
      "(each class repeated to %d: the mean of the new data's classes, all old classes together "
      "at most as many as the new images) beside %d new images; "
      "%d exemplars (at most %d per class) are stored with each version",
      old_set.size(), old_classes_, replayed_, target, train_.size() - replayed_,
      next_memory_->records.size(), per_class));
  return absl::OkStatus();
}

void Trainer::ScorePrevious(TrainResult* result) {
  if (!options_.incremental || val_.size() == 0) return;
  const TrainerOptions::Incremental& inc = *options_.incremental;
  const std::vector<int64_t> shape(base_metadata_.input_shape().begin(),
                                   base_metadata_.input_shape().end());
  absl::StatusOr<std::unique_ptr<Teacher>> prev =
      teacher_ ? absl::StatusOr<std::unique_ptr<Teacher>>(nullptr)
               : Teacher::Create(inc.previous, inc.previous_metadata, shape, old_classes_, device_);
  if (!prev.ok()) return;
  Teacher* model = teacher_ ? teacher_.get() : prev->get();
  int64_t correct[2] = {0, 0}, seen[2] = {0, 0};
  val_.BeginRanges(inference_batch_);
  for (int64_t begin = 0; begin < val_.size(); begin += inference_batch_) {
    const int64_t n = std::min(inference_batch_, val_.size() - begin);
    const torch::Tensor pred =
        model->Logits(imaging::Normalizer::ToUnit(val_.Range(begin, n))).argmax(1).cpu();
    const torch::Tensor labels = val_.labels().narrow(0, begin, n).cpu();
    for (int64_t i = 0; i < n; ++i) {
      const int64_t label = labels[i].item<int64_t>();
      const int which = label < old_classes_ ? 0 : 1;
      ++seen[which];
      if (pred[i].item<int64_t>() == label) ++correct[which];
    }
  }
  auto ratio = [](int64_t a, int64_t b) {
    return b > 0 ? static_cast<double>(a) / static_cast<double>(b) : 0.0;
  };
  TrainResult::Incremental& r = result->incremental;
  r.old_examples = seen[0];
  r.new_examples = seen[1];
  r.old_accuracy_before = ratio(correct[0], seen[0]);
  r.new_accuracy_before = ratio(correct[1], seen[1]);
  r.all_accuracy_before = ratio(correct[0] + correct[1], seen[0] + seen[1]);
}

absl::Status Trainer::BuildTeacher() {
  // INCREMENTAL distils from the previous version on its old classes, DISTILL
  // from the teacher on all of them: one teacher either way.
  const torch::jit::Module* module = nullptr;
  const kaizen::v1::Model* metadata = nullptr;
  int64_t classes = 0;
  if (options_.incremental && !options_.incremental->options.disable_distillation()) {
    module = &options_.incremental->previous;
    metadata = &options_.incremental->previous_metadata;
    classes = old_classes_;
  } else if (options_.distillation) {
    module = &options_.distillation->teacher;
    metadata = &options_.distillation->teacher_metadata;
    classes = num_classes_;
  } else {
    return absl::OkStatus();
  }
  const std::vector<int64_t> shape(base_metadata_.input_shape().begin(),
                                   base_metadata_.input_shape().end());
  ASSIGN_OR_RETURN(teacher_, Teacher::Create(*module, *metadata, shape, classes, device_));
  if (augmenter_->active()) return absl::OkStatus();
  if (!train_.streamed() && options_.group == nullptr) {
    // Computed at the first step that needs it.
    teacher_cache_.emplace(teacher_.get(), train_.in_memory()->images, inference_batch_);
    return absl::OkStatus();
  }
  // Streamed: one pass now, rather than a decode of every image per epoch;
  // in a group, a share of it per rank.
  where_ = "teacher logit caching";
  teacher_cache_.emplace(TablePass(
      train_, [&](const torch::Tensor& unit) { return teacher_->Logits(unit); }, device_));
  return absl::OkStatus();
}

double Trainer::TeacherAccuracy(ImageSource& set) {
  int64_t correct = 0;
  set.BeginRanges(inference_batch_);
  for (int64_t begin = 0; begin < set.size(); begin += inference_batch_) {
    const int64_t n = std::min(inference_batch_, set.size() - begin);
    const torch::Tensor logits = teacher_->Logits(imaging::Normalizer::ToUnit(set.Range(begin, n)));
    correct += logits.argmax(1).eq(set.labels().narrow(0, begin, n)).sum().item<int64_t>();
  }
  return set.size() > 0 ? static_cast<double>(correct) / static_cast<double>(set.size()) : 0;
}

absl::Status Trainer::SplitValidation(const std::vector<int32_t>& labels,
                                      std::vector<int64_t>* train_rows,
                                      std::vector<int64_t>* val_rows) {
  const double split = hp_.validation().split();
  auto [train_idx, val_idx] =
      StratifiedSplit(labels, split, DeriveSeed(hp_.seed(), kSplitStream, 0));
  if (train_idx.empty()) {
    return absl::InvalidArgumentError("validation.split leaves no training images");
  }
  // The fewest training images the split leaves a class that has any.
  std::vector<int64_t> per_class(num_classes_, 0);
  for (int64_t i : train_idx) ++per_class[labels[i]];
  std::vector<int64_t> present(num_classes_, 0);
  for (int32_t label : labels) ++present[label];
  int64_t fewest = -1;
  for (int64_t c = 0; c < num_classes_; ++c) {
    if (present[c] > 0 && (fewest < 0 || per_class[c] < fewest)) fewest = per_class[c];
  }
  if (fewest >= kMinTrainImagesPerClass) {
    *train_rows = std::move(train_idx);
    *val_rows = std::move(val_idx);
    return absl::OkStatus();
  }
  const bool early_stopping = hp_.early_stopping().enabled();
  const auto all = static_cast<int64_t>(labels.size());
  Note(absl::StrFormat(
      "validation: a %g split would leave a class %d training images (fewer than %d), so this "
      "job trains on all %d images without validation%s for its %d epochs (%d optimiser steps); "
      "the best checkpoint is the one with the lowest train_loss. For a validation metric on "
      "so little data, upload a separate validation dataset (validation.dataset)",
      split, fewest, kMinTrainImagesPerClass, all,
      early_stopping ? " and without early stopping" : "", hp_.epochs(),
      BatchSampler(all, hp_.batch_size(), hp_.drop_last_fraction(), hp_.seed())
              .batches_per_epoch() *
          hp_.epochs()));
  hp_.mutable_validation()->set_split(0);
  hp_.mutable_early_stopping()->set_enabled(false);
  return absl::OkStatus();
}

absl::Status Trainer::BuildOptimizer() {
  const std::vector<ParamGroup> groups =
      MakeParamGroups(options_.strategy, hp_, head_params_, backbone_params_);
  for (const ParamGroup& g : groups) base_lrs_.push_back(g.lr);
  optimizer_ = MakeOptimizer(hp_.optimizer(), groups);
  if (resuming_ && !state_.optimizer.empty()) {
    std::istringstream in(state_.optimizer);
    torch::serialize::InputArchive archive;
    archive.load_from(in, device_);
    optimizer_->load(archive);
  }
  return SynchronizeModel(/*parameters=*/true);
}

absl::Status Trainer::SynchronizeModel(bool parameters) {
  if (options_.group == nullptr) return absl::OkStatus();
  std::vector<torch::Tensor> tensors;
  for (const torch::jit::Module* m : {&split_.backbone, &split_.head}) {
    if (parameters) {
      for (const torch::Tensor& p : m->parameters()) tensors.push_back(p.detach());
    }
    for (const torch::Tensor& b : m->buffers()) tensors.push_back(b);
  }
  torch::NoGradGuard no_grad;
  return options_.group->Broadcast(tensors, 0);
}

absl::StatusOr<bool> Trainer::RankZeroSays(bool flag) {
  if (options_.group == nullptr) return flag;
  return options_.group->Any(options_.group->rank() == 0 && flag);
}

uint64_t Trainer::RankSeed(uint64_t stream, uint64_t epoch) const {
  const uint64_t seed = DeriveSeed(hp_.seed(), stream, epoch);
  const int rank = options_.group != nullptr ? options_.group->rank() : 0;
  return rank == 0 ? seed : DeriveSeed(seed, kRankStream, static_cast<uint64_t>(rank));
}

torch::Tensor Trainer::ModelInput(const torch::Tensor& x) const {
  if (!options_.channels_last || x.dim() != 4) return x;
  return x.contiguous(torch::MemoryFormat::ChannelsLast);
}

torch::Tensor Trainer::Features(const torch::Tensor& unit_images) {
  const torch::Tensor x = ModelInput(normalizer_->Normalize(unit_images));
  AutocastScope autocast(amp_, amp_dtype_);
  ++backbone_batches_;
  return split_.backbone.forward({x}).toTensor().to(torch::kFloat);
}

torch::Tensor Trainer::TablePass(
    ImageSource& set, const std::function<torch::Tensor(const torch::Tensor&)>& per_batch,
    const torch::Device& device) {
  const int64_t n = set.size();
  const distributed::PassShare pass = distributed::ShareOfPass(n, inference_batch_, options_.group);
  const bool shared = pass.shared;
  const std::vector<std::vector<int64_t>>& mine = pass.chunks;
  torch::Tensor all;
  const auto run_chunks = [&] {
    set.Begin(mine);
    for (const std::vector<int64_t>& rows : mine) {
      StopPoint();
      const int64_t count = static_cast<int64_t>(rows.size());
      const torch::Tensor out =
          per_batch(imaging::Normalizer::ToUnit(set.Range(rows.front(), count)));
      if (!all.defined()) {
        std::vector<int64_t> sizes = out.sizes().vec();
        sizes[0] = n;
        all = shared ? torch::zeros(sizes, out.options().device(device))
                     : torch::empty(sizes, out.options().device(device));
      }
      all.narrow(0, rows.front(), count).copy_(out);
    }
  };
  if (!shared) {
    run_chunks();
    return all;
  }
  // A rank whose chunks fail rethrows after telling the others, so that
  // every rank leaves the pass together. Where the job can go on (its
  // memory: UsePrefixCache falls back) the others throw
  // distributed::PeerFailure and every rank takes the fallback; where it
  // cannot (a bad record, ImageSourceError) they fail with Aborted.
  const auto recoverable = [](const std::exception& e) {
    return dynamic_cast<const ImageSourceError*>(&e) == nullptr;
  };
  if (absl::Status agreed = distributed::RunOnAllRanks(*options_.group, run_chunks, recoverable);
      !agreed.ok()) {
    throw GroupError(std::move(agreed));
  }
  if (absl::Status summed = options_.group->Sum({all}); !summed.ok()) {
    throw GroupError(std::move(summed));
  }
  return all;
}

torch::Tensor Trainer::AllFeatures(ImageSource& set) {
  torch::NoGradGuard no_grad;
  split_.backbone.eval();
  return TablePass(
      set, [&](const torch::Tensor& unit) { return Features(unit); }, device_);
}

void Trainer::BuildFeatureCache() {
  train_features_ = AllFeatures(train_);
  val_features_ = val_.size() > 0 ? AllFeatures(val_) : torch::Tensor();
  if (standardize_ && !feature_mean_.defined()) SetFeatureStandardization(train_features_);
  // The cache holds what the head takes.
  train_features_ = HeadInput(train_features_);
  if (val_features_.defined()) val_features_ = HeadInput(val_features_);
}

void Trainer::SetFeatureStandardization(const torch::Tensor& train_features) {
  // A linear head on raw features converges only when their scale suits
  // its learning rate: on a randomly initialised resnet50 the first loss was
  // 257. Standardised, every feature has unit spread whatever the backbone.
  torch::NoGradGuard no_grad;
  const torch::Tensor f = train_features.to(torch::kDouble);
  const torch::Tensor mean = f.mean(0);
  torch::Tensor std = f.std(0, /*unbiased=*/false);
  const double typical = std.mean().item<double>();
  if (!(typical > 0) || !std::isfinite(typical)) {
    std = torch::ones_like(std);
  } else {
    std = torch::where(std > kMinStdShare * typical, std, torch::full_like(std, typical));
  }
  feature_mean_ = mean.to(device_, torch::kFloat);
  feature_std_ = std.to(device_, torch::kFloat);
  Note(absl::StrFormat(
      "FEATURE_EXTRACTION: the head trains on the backbone's features standardised with the mean "
      "and standard deviation of the %d training images (typical standard deviation %.3g); the "
      "exported model has that map folded into its head and takes raw features",
      train_features.size(0), typical));
}

torch::Tensor Trainer::HeadInput(const torch::Tensor& features) const {
  if (!standardize_) return features;
  return (features - feature_mean_) / feature_std_;
}

torch::Tensor Trainer::TrainLogits(const std::vector<int64_t>& batch, const torch::Tensor& idx,
                                   bool use_cache, bool use_prefix, at::Generator& gen,
                                   torch::Tensor* teacher_logits) {
  // The feature cache implies no augmentation, so the teacher's logits are
  // cached too.
  if (teacher_cache_) *teacher_logits = teacher_cache_->Rows(idx);
  if (use_cache) {
    AutocastScope autocast(amp_, amp_dtype_);
    return split_.head.forward({train_features_.index_select(0, idx)}).toTensor();
  }
  if (use_prefix) {
    // The frozen layers' output for these images, then the rest of the
    // backbone, which trains.
    const torch::Tensor prefixes =
        ModelInput(train_prefixes_.index_select(0, idx.cpu()).to(device_));
    const torch::Tensor features = HeadInput(cut_->Suffix(prefixes).to(torch::kFloat));
    AutocastScope autocast(amp_, amp_dtype_);
    return split_.head.forward({features}).toTensor();
  }
  torch::Tensor x = imaging::Normalizer::ToUnit(train_.Rows(batch));
  if (augmenter_->active()) x = augmenter_->Apply(x, gen);
  // The teacher sees the very images the student does, augmentation and all.
  if (teacher_ && !teacher_cache_) *teacher_logits = teacher_->Logits(x);
  torch::Tensor features;
  if (backbone_params_.empty() || !backbone_params_[0].requires_grad()) {
    torch::NoGradGuard no_grad;
    features = Features(x);
  } else {
    features = Features(x);
  }
  features = HeadInput(features);
  AutocastScope autocast(amp_, amp_dtype_);
  return split_.head.forward({features}).toTensor();
}

Evaluation Trainer::Evaluate(ImageSource& set, const torch::Tensor& cached_features,
                             const torch::Tensor& cached_prefixes) {
  torch::NoGradGuard no_grad;
  split_.backbone.eval();
  split_.head.eval();
  // In a group of at most as many ranks as images, each rank scores its
  // chunks (distributed::ChunksOfRank) and the sums are added up over the ranks: the
  // loss's sum, then per class the correct answers and the images.
  const int64_t size = set.size();
  const distributed::PassShare pass =
      distributed::ShareOfPass(size, inference_batch_, options_.group);
  const bool shared = pass.shared;
  const std::vector<std::vector<int64_t>>& mine = pass.chunks;
  if (!cached_features.defined() && !cached_prefixes.defined()) set.Begin(mine);
  std::vector<double> sums(1 + 2 * static_cast<size_t>(num_classes_), 0.0);
  double* correct = sums.data() + 1;
  double* total = correct + num_classes_;
  for (const std::vector<int64_t>& rows : mine) {
    const int64_t begin = rows.front();
    const int64_t n = static_cast<int64_t>(rows.size());
    torch::Tensor features =
        cached_features.defined() ? cached_features.narrow(0, begin, n)
        : cached_prefixes.defined()
            // A copy: layers may work in place on their input.
            ? HeadInput(cut_->Suffix(ModelInput(cached_prefixes.narrow(0, begin, n)
                                                    .to(device_, /*non_blocking=*/false,
                                                        /*copy=*/true)))
                            .to(torch::kFloat))
            : HeadInput(Features(imaging::Normalizer::ToUnit(set.Range(begin, n))));
    torch::Tensor logits;
    {
      AutocastScope autocast(amp_, amp_dtype_);
      logits = split_.head.forward({features}).toTensor();
    }
    const torch::Tensor labels = set.labels().narrow(0, begin, n);
    sums[0] += SmoothedCrossEntropy(logits, labels, 0.0).item<double>() * static_cast<double>(n);
    const torch::Tensor pred = logits.argmax(1).cpu();
    const torch::Tensor truth = labels.cpu();
    const int64_t* p = pred.data_ptr<int64_t>();
    const int64_t* l = truth.data_ptr<int64_t>();
    for (int64_t k = 0; k < n; ++k) {
      total[l[k]] += 1;
      if (p[k] == l[k]) correct[l[k]] += 1;
    }
  }
  if (shared) {
    torch::Tensor summed = torch::tensor(sums, torch::kDouble);
    if (absl::Status st = options_.group->Sum({summed}); !st.ok()) throw GroupError(std::move(st));
    std::copy(summed.data_ptr<double>(), summed.data_ptr<double>() + summed.numel(), sums.begin());
  }
  Evaluation e;
  int64_t right = 0;
  for (int64_t c = 0; c < num_classes_; ++c) {
    e.correct.push_back(std::llround(correct[c]));
    e.total.push_back(std::llround(total[c]));
    right += e.correct.back();
  }
  e.loss = sums[0] / static_cast<double>(size);
  e.accuracy = static_cast<double>(right) / static_cast<double>(size);
  return e;
}

void Trainer::SetLearningRates(double factor) {
  auto& groups = optimizer_->param_groups();
  for (size_t g = 0; g < groups.size(); ++g) groups[g].options().set_lr(base_lrs_[g] * factor);
}

void Trainer::ClearGradients() {
  // Set to none, not zero: a zero gradient would still move frozen
  // parameters through momentum and weight decay.
  for (auto& group : optimizer_->param_groups()) {
    for (torch::Tensor& p : group.params()) {
      if (p.grad().defined()) p.mutable_grad() = torch::Tensor();
    }
  }
}

absl::StatusOr<bool> Trainer::BackwardAndStep(const torch::Tensor& loss, double share) {
  ClearGradients();
  std::vector<torch::Tensor> with_grad;
  if (!loss.defined()) {
    // No examples on this rank: its part of the sum is zeros.
  } else if (fp16_) {
    (loss * state_.loss_scale).backward();
  } else {
    loss.backward();
  }
  for (auto& group : optimizer_->param_groups()) {
    for (torch::Tensor& p : group.params()) {
      if (p.grad().defined() || (options_.group != nullptr && p.requires_grad())) {
        with_grad.push_back(p);
      }
    }
  }
  if (options_.group != nullptr) RETURN_IF_ERROR(options_.group->ReduceGradients(with_grad, share));
  if (fp16_) {
    bool finite = true;
    for (torch::Tensor& p : with_grad) {
      p.mutable_grad().div_(state_.loss_scale);
      finite = finite && torch::isfinite(p.grad()).all().item<bool>();
    }
    if (!finite) {
      state_.loss_scale = std::max(1.0, state_.loss_scale / 2);
      state_.good_steps = 0;
      ClearGradients();
      return false;
    }
    if (++state_.good_steps >= kLossScaleGrowthInterval) {
      state_.loss_scale *= 2;
      state_.good_steps = 0;
    }
  }
  if (hp_.gradient_clip_norm() > 0 && !with_grad.empty()) {
    torch::nn::utils::clip_grad_norm_(with_grad, hp_.gradient_clip_norm());
  }
  optimizer_->step();
  return true;
}

std::string Trainer::MetricName() const {
  if (val_.size() == 0) return "train_loss";
  return hp_.early_stopping().metric() == "val_loss" ? "val_loss" : "val_accuracy";
}

double Trainer::MetricValue(const kaizen::v1::EpochMetrics& m) const {
  const std::string name = MetricName();
  if (name == "val_accuracy") return m.val_accuracy();
  if (name == "val_loss") return m.val_loss();
  return m.train_loss();
}

absl::StatusOr<Checkpoint> Trainer::MakeCheckpoint(int32_t epochs_completed, int64_t global_step,
                                                   bool is_best, int bn_recalibrated) {
  Checkpoint cp;
  ASSIGN_OR_RETURN(cp.module, AssembleClassifier(split_, torch::kCPU));
  // Without statistics yet (stopped during the first feature pass) the head
  // has not trained: there is nothing to fold.
  if (standardize_ && feature_mean_.defined()) {
    RETURN_IF_ERROR(FoldInputStandardization(split_, feature_mean_, feature_std_, &cp.module));
  }
  cp.epoch = epochs_completed;
  cp.is_best = is_best;
  cp.exemplars = next_memory_;
  kaizen::v1::Model& m = cp.metadata;
  m = base_metadata_;
  m.clear_version();
  m.clear_size_bytes();
  m.clear_sha256();
  m.clear_create_time();
  m.clear_job_id();
  m.clear_versions();
  m.clear_latest_version();
  m.clear_best_version();
  m.clear_metrics();
  m.set_source(kaizen::v1::MODEL_SOURCE_FINE_TUNED);
  m.clear_class_names();
  for (const std::string& name : class_names_) m.add_class_names(name);
  kaizen::v1::ModelHead* head = m.mutable_head();
  head->set_module_path(AssembledHeadPath(split_));
  head->set_kind(split_.kind);
  head->set_in_features(split_.in_features);
  head->set_out_features(num_classes_);
  int64_t count = 0;
  for (const torch::Tensor& p : cp.module.parameters(/*recurse=*/true)) count += p.numel();
  m.set_parameter_count(count);
  if (!state_.history.empty()) {
    const kaizen::v1::EpochMetrics& last = state_.history.back();
    (*m.mutable_metrics())["train_loss"] = last.train_loss();
    (*m.mutable_metrics())["train_accuracy"] = last.train_accuracy();
    if (val_.size() > 0) {
      (*m.mutable_metrics())["val_loss"] = last.val_loss();
      (*m.mutable_metrics())["val_accuracy"] = last.val_accuracy();
    }
  }
  (*m.mutable_metrics())["bn_recalibrated"] = bn_recalibrated;
  ResumeState resume = state_;
  if (standardize_) resume.feature_standardization = EncodeFeatureStandardization();
  resume.epochs_completed = epochs_completed;
  resume.global_step = global_step;
  std::ostringstream out;
  torch::serialize::OutputArchive archive;
  optimizer_->save(archive);
  archive.save_to(out);
  resume.optimizer = out.str();
  cp.resume_state = EncodeResumeState(resume);
  return cp;
}

EpochRun Trainer::StartEpoch(int32_t epoch) {
  where_ = absl::StrCat("epoch ", epoch + 1);
  EpochRun run;
  run.epoch = epoch;
  run.start = Clock::now();
  torch::manual_seed(RankSeed(kTorchStream, epoch));
  run.augment_gen = at::make_generator<at::CPUGeneratorImpl>(RankSeed(kAugmentStream, epoch));

  const bool backbone_frozen = options_.strategy == kaizen::v1::STRATEGY_FEATURE_EXTRACTION ||
                               epoch < hp_.head_warmup_epochs() || trainable_backbone_.empty();
  ApplyRequiresGrad(split_.backbone,
                    backbone_frozen ? std::set<std::string>{} : trainable_backbone_);
  run.use_cache = options_.use_feature_cache && backbone_frozen && !augmenter_->active();
  // A group stops only where its ranks agree, between two steps.
  passes_may_stop_ = options_.group == nullptr;
  const absl::Cleanup passes_end = [this] { passes_may_stop_ = false; };
  try {
    if (standardize_ && !feature_mean_.defined() && !run.use_cache) {
      where_ = absl::StrCat("epoch ", epoch + 1, " feature statistics");
      SetFeatureStandardization(AllFeatures(train_));
    }
    if (run.use_cache && !train_features_.defined()) {
      where_ = absl::StrCat("epoch ", epoch + 1, " feature caching");
      BuildFeatureCache();
    } else if (!run.use_cache) {
      train_features_ = torch::Tensor();
      val_features_ = torch::Tensor();
    }
    SetTrainingMode(split_.backbone);
    training_batchnorms_ = TrainingBatchNormPaths(split_.backbone);
    split_.head.train();
    if (!run.use_cache && !backbone_frozen && !augmenter_->active()) {
      where_ = absl::StrCat("epoch ", epoch + 1, " frozen-prefix caching");
      run.use_prefix = UsePrefixCache();
    }
  } catch (const PassStopped&) {
    // Nothing half-built stays: the caches are as if never started (a
    // resumed job builds them again).
    train_features_ = torch::Tensor();
    val_features_ = torch::Tensor();
    cut_.reset();
    train_prefixes_ = torch::Tensor();
    val_prefixes_ = torch::Tensor();
    prefix_decided_ = false;
    run.stopped_before_steps = true;
  }
  return run;
}

void Trainer::StopPoint() const {
  if (passes_may_stop_ && callbacks_.should_stop && callbacks_.should_stop()) throw PassStopped{};
}

bool Trainer::UsePrefixCache() {
  if (cut_.has_value()) return true;
  if (prefix_decided_) return false;
  prefix_decided_ = true;
  if (options_.max_prefix_cache_bytes <= 0) return false;
  if (amp_) {
    Note(
        "every step runs the whole backbone: the frozen-prefix cache is off under mixed "
        "precision");
    return false;
  }
  try {
    return BuildPrefixCache();
  } catch (const ImageSourceError&) {
    throw;  // the data's fault, not the cut's: the job reports it
  } catch (const std::exception& e) {
    cut_.reset();
    train_prefixes_ = torch::Tensor();
    val_prefixes_ = torch::Tensor();
    Note(absl::StrCat("every step runs the whole backbone (no frozen-prefix cache): ",
                      models::TorchErrorSummary(e)));
    return false;
  }
}

bool Trainer::BuildPrefixCache() {
  const auto no_cache = [&](const std::string& why) {
    Note(absl::StrCat("every step runs the whole backbone (no frozen-prefix cache): ", why));
    return false;
  };
  // The lowest block that trains; below it everything is frozen.
  const std::vector<std::string> blocks = ListBlocks(split_.backbone, split_.identity_path);
  std::string first;
  for (const std::string& block : blocks) {
    const bool trains =
        std::any_of(trainable_backbone_.begin(), trainable_backbone_.end(),
                    [&](const std::string& name) { return absl::StartsWith(name, block + "."); });
    if (trains) {
      first = block;
      break;
    }
  }
  if (first.empty() || first == blocks.front()) return false;
  absl::StatusOr<ForwardCut> cut = ForwardCut::Before(split_.backbone, first);
  if (!cut.ok()) return no_cache(std::string(cut.status().message()));
  for (const std::string& path : cut->prefix_modules()) {
    absl::StatusOr<torch::jit::Module> module = FindSubmodule(split_.backbone, path);
    if (!module.ok() || !BehavesAsInEval(*module)) {
      return no_cache(absl::StrCat("'", path, "', below the first trainable block '", first,
                                   "', behaves differently in training mode"));
    }
  }
  // A probe on two random images: the prefix must hold no trainable weight
  // (its output needs no gradient), give the same output when run again
  // (no randomness) and the same output for an image alone as in a batch
  // (no batch statistics), as a cache of it assumes.
  const std::vector<int64_t> shape(base_metadata_.input_shape().begin(),
                                   base_metadata_.input_shape().end());
  torch::Tensor probe_out;
  {
    torch::AutoGradMode grad(true);
    at::Generator gen = at::detail::createCPUGenerator(/*seed_in=*/20261202);
    const torch::Tensor x =
        torch::randn({2, shape[0], shape[1], shape[2]}, gen, torch::kFloat).to(device_);
    probe_out = cut->Prefix(x);
    if (probe_out.requires_grad()) {
      return no_cache(absl::StrCat("the layers below '", first, "' hold trainable weights"));
    }
    torch::NoGradGuard no_grad;
    const torch::Tensor again = cut->Prefix(x);
    const torch::Tensor alone = cut->Prefix(x.narrow(0, 0, 1));
    if (!torch::equal(again, probe_out) ||
        !torch::allclose(alone, probe_out.narrow(0, 0, 1), /*rtol=*/1e-4, /*atol=*/1e-5)) {
      return no_cache(absl::StrCat("the layers below '", first,
                                   "' are random or depend on the rest of the batch"));
    }
  }
  const int64_t per_image = probe_out.nbytes() / 2;
  const double bytes =
      static_cast<double>(per_image) * static_cast<double>(train_.size() + val_.size());
  if (bytes > static_cast<double>(options_.max_prefix_cache_bytes)) {
    return no_cache(absl::StrFormat(
        "the frozen layers' output below '%s' for %d images would take %.0f MiB, over the "
        "server's --max_prefix_cache_mb (%d)",
        first, train_.size() + val_.size(), bytes / 1048576.0,
        options_.max_prefix_cache_bytes >> 20));
  }
  cut_ = *std::move(cut);
  train_prefixes_ = AllPrefixes(train_);
  val_prefixes_ = val_.size() > 0 ? AllPrefixes(val_) : torch::Tensor();
  Note(absl::StrFormat(
      "the frozen layers below '%s' ran once for the %d images (%.0f MiB of their output kept); "
      "each step runs '%s' and above",
      first, train_.size() + val_.size(), bytes / 1048576.0, first));
  return true;
}

torch::Tensor Trainer::AllPrefixes(ImageSource& set) {
  torch::NoGradGuard no_grad;
  return TablePass(
      set,
      [&](const torch::Tensor& unit) {
        return cut_->Prefix(ModelInput(normalizer_->Normalize(unit)));
      },
      torch::kCPU);
}

void Trainer::ResumeWithinEpoch(const EpochPosition& at, EpochRun* run) {
  where_ = absl::StrCat("epoch ", run->epoch + 1, " resume at step ", at.step + 1);
  run->first_batch = at.step;
  run->loss_sum = at.loss_sum;
  run->correct = at.correct;
  run->seen = at.seen;
  run->lr_now = at.learning_rate;
  run->start -=
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(at.seconds));
  if (options_.group != nullptr && options_.group->rank() > 0) {
    // The checkpoint holds rank 0's generators; this rank draws from its own
    // streams, restarted at this step.
    torch::manual_seed(DeriveSeed(RankSeed(kTorchStream, run->epoch), kResumeStream,
                                  static_cast<uint64_t>(at.step)));
    run->augment_gen = at::make_generator<at::CPUGeneratorImpl>(DeriveSeed(
        RankSeed(kAugmentStream, run->epoch), kResumeStream, static_cast<uint64_t>(at.step)));
    return;
  }
  RestoreGenerator(TorchGenerator(), at.torch_rng);
  if (std::optional<at::Generator> cuda = CudaGenerator(); cuda && !at.cuda_rng.empty()) {
    RestoreGenerator(*cuda, at.cuda_rng);
  }
  RestoreGenerator(run->augment_gen, at.augment_rng);
}

absl::StatusOr<bool> Trainer::RunSteps(EpochRun* run) {
  if (run->stopped_before_steps) {
    where_ = absl::StrCat("epoch ", run->epoch + 1, " step ", run->first_batch + 1);
    RETURN_IF_ERROR(CheckpointStoppedAt(*run, run->first_batch,
                                        run->epoch * steps_per_epoch_ + run->first_batch));
    return true;
  }
  std::vector<std::vector<int64_t>> batches = sampler_->EpochBatches(run->epoch);
  std::vector<int64_t> global_sizes;
  for (std::vector<int64_t>& batch : batches) {
    global_sizes.push_back(static_cast<int64_t>(batch.size()));
    if (options_.group != nullptr) {
      batch =
          distributed::ShardOfBatch(batch, options_.group->rank(), options_.group->world_size());
    }
  }
  if (!run->use_cache && !run->use_prefix) {
    // A rank with no share of a (last, short) batch loads nothing for it.
    std::vector<std::vector<int64_t>> to_load;
    for (size_t b = static_cast<size_t>(run->first_batch); b < batches.size(); ++b) {
      if (!batches[b].empty()) to_load.push_back(batches[b]);
    }
    train_.Begin(std::move(to_load));
  }
  for (int64_t b = run->first_batch; b < static_cast<int64_t>(batches.size()); ++b) {
    const int64_t global_step = run->epoch * steps_per_epoch_ + b;
    where_ = absl::StrCat("epoch ", run->epoch + 1, " step ", b + 1);
    ASSIGN_OR_RETURN(const bool stop,
                     RankZeroSays(callbacks_.should_stop && callbacks_.should_stop()));
    if (stop) {
      RETURN_IF_ERROR(CheckpointStoppedAt(*run, b, global_step));
      return true;
    }
    RETURN_IF_ERROR(Step(batches[b], global_sizes[b], b, global_step, run));
  }
  return false;
}

absl::Status Trainer::CheckpointStoppedAt(const EpochRun& run, int64_t batch, int64_t global_step) {
  if (!callbacks_.on_checkpoint) return absl::OkStatus();
  // Everything the remaining steps depend on besides the weights and the
  // optimizer, so that a resume continues with this very step.
  EpochPosition& pos = state_.position;
  pos.step = batch;
  pos.loss_sum = run.loss_sum;
  pos.correct = run.correct;
  pos.seen = run.seen;
  pos.learning_rate = run.lr_now;
  pos.seconds = Seconds(run.start);
  pos.torch_rng = SaveGenerator(TorchGenerator());
  if (std::optional<at::Generator> cuda = CudaGenerator()) {
    pos.cuda_rng = SaveGenerator(*cuda);
  }
  pos.augment_rng = SaveGenerator(run.augment_gen);
  ASSIGN_OR_RETURN(Checkpoint cp, MakeCheckpoint(run.epoch, global_step, /*is_best=*/false,
                                                 /*bn_recalibrated=*/0));
  // The checkpoint's copy gets sound statistics; the training model keeps
  // its moving averages, so that resuming continues exactly as a run that
  // never stopped.
  if (!training_batchnorms_.empty()) {
    where_ = absl::StrCat("epoch ", run.epoch + 1, " BatchNorm recalibration");
    torch::jit::Module backbone = split_.kind == kaizen::v1::HEAD_KIND_MLP
                                      ? cp.module.attr("backbone").toModule()
                                      : cp.module;
    // Rank 0 alone checkpoints here.
    ASSIGN_OR_RETURN(const int recalibrated,
                     RecalibrateBatchNorm(backbone, torch::kCPU, /*use_prefix=*/false,
                                          /*shared=*/false));
    (*cp.metadata.mutable_metrics())["bn_recalibrated"] = recalibrated;
  }
  if (callbacks_.on_checkpoint) RETURN_IF_ERROR(callbacks_.on_checkpoint(cp));
  return absl::OkStatus();
}

bool Trainer::CheckpointsAfter(int32_t epoch) const {
  // Validation metrics choose the best checkpoint and early stopping may end
  // the run after any epoch: both need a checkpoint with sound statistics
  // every epoch, as does the last epoch.
  if (val_.size() > 0 || hp_.early_stopping().enabled() || epoch + 1 >= hp_.epochs()) return true;
  const int32_t every = std::max(1, (hp_.epochs() + kCheckpointsPerRun - 1) / kCheckpointsPerRun);
  return (epoch + 1) % every == 0;
}

absl::StatusOr<int> Trainer::RecalibrateBatchNorm(torch::jit::Module backbone,
                                                  const torch::Device& device, bool use_prefix,
                                                  bool shared) {
  const int64_t total = train_.size();
  const int64_t n = std::min(total, kRecalibrationImages);
  // One image cannot give a variance for a layer without spatial extent.
  if (training_batchnorms_.empty() || n < 2) return 0;
  // Equal batches, so that none is tiny; evenly spaced images when the set
  // is larger than the sample, so that every class is in it.
  const int64_t batches = (n + inference_batch_ - 1) / inference_batch_;
  const bool amp = amp_ && device.is_cuda();
  // In a group with a batch for every rank, each runs every world_size-th
  // batch and the sums are added up over the ranks.
  distributed::Group* group =
      shared && options_.group != nullptr && batches >= options_.group->world_size()
          ? options_.group
          : nullptr;
  std::vector<int64_t> all_batches(static_cast<size_t>(batches));
  std::iota(all_batches.begin(), all_batches.end(), 0);
  const std::vector<int64_t> my_batches =
      group != nullptr ? distributed::ShardOfBatch(all_batches, group->rank(), group->world_size())
                       : all_batches;
  std::vector<std::vector<int64_t>> rows;
  for (const int64_t b : my_batches) {
    std::vector<int64_t>& batch = rows.emplace_back();
    for (int64_t i = b * n / batches; i < (b + 1) * n / batches; ++i) {
      batch.push_back(i * total / n);
    }
  }
  const int64_t mine = static_cast<int64_t>(rows.size());
  if (use_prefix) {
    auto run_prefixes = [&](int64_t b) -> int64_t {
      const torch::Tensor index = torch::tensor(rows[b], torch::kLong);
      cut_->Suffix(train_prefixes_.index_select(0, index).to(device));
      return static_cast<int64_t>(rows[b].size());
    };
    return kaizen::training::RecalibrateBatchNorm(backbone, training_batchnorms_, mine,
                                                  run_prefixes, group);
  }
  // Batch 0 runs twice (see RecalibrateBatchNorm), read once.
  train_.Begin(rows);
  torch::Tensor first;
  auto run_batch = [&](int64_t b) -> int64_t {
    torch::Tensor images;
    if (b == 0 && first.defined()) {
      images = first;
    } else {
      images = train_.Rows(rows[b]);
      if (b == 0) first = images;
    }
    const torch::Tensor x = normalizer_->Normalize(imaging::Normalizer::ToUnit(images)).to(device);
    AutocastScope autocast(amp, amp_dtype_);
    ++backbone_batches_;
    backbone.forward({x});
    return static_cast<int64_t>(rows[b].size());
  };
  return kaizen::training::RecalibrateBatchNorm(backbone, training_batchnorms_, mine, run_batch,
                                                group);
}

void Trainer::Note(const std::string& message) {
  notes_.push_back(message);
  if (callbacks_.on_message) callbacks_.on_message(message);
}

absl::Status Trainer::Step(const std::vector<int64_t>& batch, int64_t global_size, int64_t b,
                           int64_t global_step, EpochRun* run) {
  const double factor = schedule_->Factor(global_step);
  SetLearningRates(factor);
  run->lr_now = base_lrs_[0] * factor;
  const int64_t n = static_cast<int64_t>(batch.size());
  torch::Tensor loss;
  double loss_value = 0;  // the batch's mean
  double loss_sum = 0;
  int64_t correct = 0;
  if (n > 0) {
    const torch::Tensor idx = torch::tensor(batch, torch::kLong).to(device_);
    const torch::Tensor labels = train_.labels().index_select(0, idx);
    torch::Tensor teacher_logits;
    const torch::Tensor logits =
        TrainLogits(batch, idx, run->use_cache, run->use_prefix, run->augment_gen, &teacher_logits);
    loss = options_.incremental
               ? IncrementalLoss(
                     logits, teacher_logits, labels, options_.incremental->options.temperature(),
                     options_.incremental->options.distillation_weight(), hp_.label_smoothing())
           : teacher_ ? DistillationLoss(logits, teacher_logits, labels,
                                         options_.distillation->temperature,
                                         options_.distillation->alpha, hp_.label_smoothing())
                      : SmoothedCrossEntropy(logits, labels, hp_.label_smoothing());
    loss_value = loss.item<double>();
    loss_sum = loss_value * static_cast<double>(n);
    correct = logits.argmax(1).eq(labels).sum().item<int64_t>();
  }
  if (options_.group != nullptr) {
    // The global batch's loss and accuracy, the same on every rank, so that
    // every rank takes the same decisions from them.
    torch::Tensor sums = torch::tensor({loss_sum, static_cast<double>(correct)}, torch::kDouble);
    RETURN_IF_ERROR(options_.group->Sum({sums}));
    loss_sum = sums[0].item<double>();
    correct = static_cast<int64_t>(std::llround(sums[1].item<double>()));
    loss_value = loss_sum / static_cast<double>(global_size);
  }
  if (!std::isfinite(loss_value)) {
    return common::WithCause(
        absl::InvalidArgumentError(absl::StrFormat(
            "loss became %s at epoch %d step %d (learning rate %g); lower the learning rate",
            std::isnan(loss_value) ? "NaN" : "Inf", run->epoch + 1, b + 1, run->lr_now)),
        common::kCauseDiverged);
  }
  RETURN_IF_ERROR(
      BackwardAndStep(loss, static_cast<double>(n) / static_cast<double>(global_size)).status());
  run->loss_sum += loss_sum;
  run->correct += correct;
  run->seen += global_size;
  ++steps_this_run_;
  if (callbacks_.after_update) {
    std::vector<torch::Tensor> trainable;
    for (auto& group : optimizer_->param_groups()) {
      for (const torch::Tensor& p : group.params()) {
        if (p.requires_grad()) trainable.push_back(p);
      }
    }
    callbacks_.after_update(global_step + 1, trainable);
  }
  ReportStep(*run, global_step, loss_value);
  return absl::OkStatus();
}

void Trainer::ReportStep(const EpochRun& run, int64_t global_step, double loss_value) {
  if (!callbacks_.on_step) return;
  kaizen::v1::StepProgress progress;
  progress.set_epoch(run.epoch + 1);
  progress.set_step(global_step + 1);
  progress.set_total_steps(total_steps_);
  progress.set_loss(loss_value);
  progress.set_learning_rate(run.lr_now);
  const double elapsed = Seconds(run.start);
  progress.set_samples_per_second(elapsed > 0 ? static_cast<double>(run.seen) / elapsed : 0);
  const double per_step = Seconds(run_start_) / static_cast<double>(steps_this_run_);
  progress.set_eta_seconds(per_step * static_cast<double>(total_steps_ - global_step - 1));
  callbacks_.on_step(progress);
}

absl::StatusOr<kaizen::v1::EpochMetrics> Trainer::EpochMetricsOf(const EpochRun& run) {
  const double train_seconds = Seconds(run.start);
  last_recalibrated_ = 0;
  // Every rank recalibrates the same model, rank 0's, on its share of the
  // recalibration batches, and scores its share of the validation images
  // (Evaluate).
  RETURN_IF_ERROR(SynchronizeModel(/*parameters=*/false));
  if (!training_batchnorms_.empty() && CheckpointsAfter(run.epoch)) {
    // In place: the statistics are a function of the weights and the
    // training images alone, so a resumed run computes the same ones, and a
    // training step in train mode does not read them.
    where_ = absl::StrCat("epoch ", run.epoch + 1, " BatchNorm recalibration");
    ASSIGN_OR_RETURN(last_recalibrated_,
                     RecalibrateBatchNorm(split_.backbone, device_, run.use_prefix,
                                          /*shared=*/true));
  }
  where_ = absl::StrCat("epoch ", run.epoch + 1, " evaluation");
  kaizen::v1::EpochMetrics metrics;
  metrics.set_epoch(run.epoch + 1);
  const double seen = static_cast<double>(run.seen);
  metrics.set_train_loss(run.seen > 0 ? run.loss_sum / seen : 0);
  metrics.set_train_accuracy(run.seen > 0 ? static_cast<double>(run.correct) / seen : 0);
  metrics.set_learning_rate(run.lr_now);
  metrics.set_samples_per_second(train_seconds > 0 ? seen / train_seconds : 0);
  if (val_.size() > 0) {
    const Evaluation e = Evaluate(val_, run.use_cache ? val_features_ : torch::Tensor(),
                                  run.use_prefix ? val_prefixes_ : torch::Tensor());
    metrics.set_val_loss(e.loss);
    metrics.set_val_accuracy(e.accuracy);
    int64_t correct[2] = {0, 0}, seen[2] = {0, 0};
    for (int64_t c = 0; c < num_classes_; ++c) {
      if (e.total[c] > 0) {
        (*metrics.mutable_per_class_accuracy())[class_names_[c]] =
            static_cast<double>(e.correct[c]) / static_cast<double>(e.total[c]);
      }
      const int which = c < old_classes_ ? 0 : 1;
      correct[which] += e.correct[c];
      seen[which] += e.total[c];
    }
    if (options_.incremental) {
      metrics.set_old_class_examples(seen[0]);
      metrics.set_new_class_examples(seen[1]);
      if (seen[0] > 0) metrics.set_old_class_accuracy(static_cast<double>(correct[0]) / seen[0]);
      if (seen[1] > 0) metrics.set_new_class_accuracy(static_cast<double>(correct[1]) / seen[1]);
    }
  }
  metrics.set_seconds(Seconds(run.start));
  return metrics;
}

absl::StatusOr<bool> Trainer::FinishEpoch(const EpochRun& run, TrainResult* result) {
  const int32_t epoch = run.epoch;
  ASSIGN_OR_RETURN(const kaizen::v1::EpochMetrics metrics, EpochMetricsOf(run));
  // The best epoch is chosen among those with a checkpoint, so that the best
  // version always exists.
  const bool checkpoint = CheckpointsAfter(epoch);
  const bool is_best =
      checkpoint && RecordCheckpointMetric(MetricValue(metrics), MetricIsMaximised(),
                                           hp_.early_stopping().min_delta(), epoch + 1, &state_);
  state_.history.push_back(metrics);
  result->last = metrics;
  result->epochs_completed = epoch + 1;

  if (callbacks_.on_epoch) callbacks_.on_epoch(metrics);
  // Nobody takes checkpoints (a tuning trial): none is built.
  if (checkpoint && callbacks_.on_checkpoint) {
    where_ = absl::StrCat("epoch ", epoch + 1, " checkpoint");
    ASSIGN_OR_RETURN(Checkpoint cp, MakeCheckpoint(epoch + 1, (epoch + 1) * steps_per_epoch_,
                                                   is_best, last_recalibrated_));
    RETURN_IF_ERROR(callbacks_.on_checkpoint(cp));
  }
  return RankZeroSays(PatienceExhausted(hp_.early_stopping(), state_));
}

absl::StatusOr<TrainResult> Trainer::Run() {
  RETURN_IF_ERROR(CheckInputs());
  RETURN_IF_ERROR(BuildModel());
  RETURN_IF_ERROR(BuildData());
  RETURN_IF_ERROR(BuildTeacher());
  RETURN_IF_ERROR(BuildOptimizer());

  TrainResult result;
  result.best_metric_name = MetricName();
  steps_per_epoch_ = sampler_->batches_per_epoch();
  total_steps_ = schedule_->total_steps();
  const int32_t first_epoch = resuming_ ? state_.epochs_completed : 0;
  // A checkpoint taken between two steps continues at the next one, with the
  // epoch's sums and the random generators as they were; checkpoints at the
  // end of an epoch carry no position.
  const EpochPosition resume_at = resuming_ ? state_.position : EpochPosition();
  state_.position = EpochPosition();
  if (resume_at.step >= steps_per_epoch_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the resume state stands at step ", resume_at.step + 1, " of an epoch that now has ",
        steps_per_epoch_, " steps; the dataset or batch size changed"));
  }
  result.epochs_completed = first_epoch;
  if (!state_.history.empty()) result.last = state_.history.back();
  run_start_ = Clock::now();
  steps_this_run_ = 0;

  for (int32_t epoch = first_epoch; epoch < hp_.epochs(); ++epoch) {
    EpochRun run = StartEpoch(epoch);
    if (epoch == first_epoch && resume_at.step > 0) ResumeWithinEpoch(resume_at, &run);
    ASSIGN_OR_RETURN(const bool stopped, RunSteps(&run));
    if (stopped) {
      result.cancelled = true;
      result.epochs_completed = epoch;
      result.backbone_forward_batches = backbone_batches_;
      result.teacher_forward_batches = teacher_ ? teacher_->forward_batches() : 0;
      result.notes = notes_;
      return result;
    }
    ASSIGN_OR_RETURN(const bool patience_exhausted, FinishEpoch(run, &result));
    if (patience_exhausted) {
      result.stopped_early = true;
      break;
    }
  }
  if (last_recalibrated_ > 0) {
    Note(absl::StrFormat(
        "BatchNorm: the running statistics of the %d layers that trained were recomputed on %d "
        "un-augmented training images after the last epoch%s",
        last_recalibrated_, std::min(train_.size(), kRecalibrationImages),
        batchnorm_layers_ > last_recalibrated_
            ? absl::StrFormat("; %d frozen layers kept their pretrained statistics",
                              batchnorm_layers_ - last_recalibrated_)
            : ""));
  }
  result.best_metric = state_.best_metric;
  result.best_epoch = state_.best_epoch;
  result.training_set_sha256 = training_set_sha256_;
  result.backbone_forward_batches = backbone_batches_;
  result.batchnorm_recalibrated = last_recalibrated_;
  // Scores of other models on the validation images: rank 0's report alone
  // is read.
  const bool reports = options_.group == nullptr || options_.group->rank() == 0;
  if (options_.incremental) {
    where_ = "previous model evaluation";
    if (reports) ScorePrevious(&result);
    result.incremental.memory = next_memory_;
    result.incremental.replayed = replayed_;
  } else if (teacher_ && val_.size() > 0 && reports) {
    where_ = "teacher evaluation";
    result.teacher_val_accuracy = TeacherAccuracy(val_);
    result.validation_examples = val_.size();
  }
  result.teacher_forward_batches = teacher_ ? teacher_->forward_batches() : 0;
  result.notes = notes_;
  return result;
}

}  // namespace

std::vector<std::string> MergeClassNames(const std::vector<std::string>& previous,
                                         const std::vector<std::string>& dataset) {
  std::vector<std::string> merged = previous;
  for (const std::string& name : dataset) {
    if (std::find(merged.begin(), merged.end(), name) == merged.end()) merged.push_back(name);
  }
  return merged;
}

absl::StatusOr<TrainResult> Train(const TrainerOptions& options, const TrainingData& data,
                                  const Callbacks& callbacks) {
  Trainer trainer(options, data, callbacks);
  try {
    return trainer.Run();
  } catch (const ImageSourceError& e) {
    return absl::Status(e.status().code(),
                        absl::StrCat(trainer.where(), ": ", e.status().message()));
  } catch (const GroupError& e) {
    return absl::Status(e.status().code(),
                        absl::StrCat(trainer.where(), ": ", e.status().message()));
  } catch (const PassStopped&) {  // StartEpoch catches it; never the server's end
    return absl::InternalError(
        absl::StrCat(trainer.where(), ": a stop escaped the pass that should have ended it"));
  } catch (const std::exception& e) {
    const std::string summary = models::TorchErrorSummary(e);
    const std::string message = absl::StrCat(trainer.where(), ": ", summary);
    if (absl::StrContains(summary, "out of memory")) {
      return absl::ResourceExhaustedError(message);
    }
    return absl::InternalError(message);
  }
}

}  // namespace kaizen::training
