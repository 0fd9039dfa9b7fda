#include "server/training/text_trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "server/common/status_macros.h"
#include "server/models/text_encoder.h"
#include "server/text/sequences.h"
#include "server/training/batch_sampler.h"
#include "server/training/early_stopping.h"
#include "server/training/freezing.h"
#include "server/training/head.h"
#include "server/training/loss.h"
#include "server/training/lr_schedule.h"
#include "server/training/optimizer_factory.h"
#include "server/training/parameter_init.h"
#include "server/training/resume_state.h"

namespace kaizen::training {
namespace {

using kaizen::v1::Strategy;

// Seed streams (DeriveSeed) of a text job.
constexpr uint64_t kInitStream = 1;
constexpr uint64_t kHeadStream = 2;
constexpr uint64_t kOrderStream = 3;
// LibTorch's default generator (dropout), reseeded at each epoch.
constexpr uint64_t kTorchStream = 4;
// Derived from an epoch's kTorchStream seed for ranks 1 and up.
constexpr uint64_t kRankStream = 5;

absl::Status CheckExamples(const TextExamples& examples, int64_t num_classes,
                           absl::string_view which) {
  if (examples.sequences.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("the ", which, " examples are empty"));
  }
  if (examples.sequences.size() != examples.labels.size()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the %s examples have %d sequences but %d labels", which,
                        examples.sequences.size(), examples.labels.size()));
  }
  for (size_t i = 0; i < examples.labels.size(); ++i) {
    if (examples.sequences[i].empty()) {
      return absl::InvalidArgumentError(absl::StrCat(which, " sequence ", i, " is empty"));
    }
    if (examples.labels[i] < 0 || examples.labels[i] >= num_classes) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s label %d of sequence %d is outside [0, %d)", which,
                          examples.labels[i], i, num_classes));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckFitsEncoder(const TextExamples& examples, const models::TextEncoderOptions& shape,
                              absl::string_view which) {
  return CheckTokenSequences(examples.sequences, shape.vocab_size, shape.max_length, which,
                             "the encoder's vocabulary");
}

// The sequences of examples `rows`.
std::vector<std::vector<int32_t>> Rows(const std::vector<std::vector<int32_t>>& sequences,
                                       const std::vector<int64_t>& rows) {
  std::vector<std::vector<int32_t>> picked;
  picked.reserve(rows.size());
  for (const int64_t r : rows) picked.push_back(sequences[static_cast<size_t>(r)]);
  return picked;
}

torch::Tensor Labels(const std::vector<int64_t>& labels, const std::vector<int64_t>& rows) {
  std::vector<int64_t> picked;
  picked.reserve(rows.size());
  for (const int64_t r : rows) picked.push_back(labels[static_cast<size_t>(r)]);
  return torch::tensor(picked, torch::kLong);
}

// The batch of the passes without gradients (features, validation).
constexpr int64_t kInferenceBatch = 64;

// A model's forward(input_ids, attention_mask) on a batch of sequences.
using SequenceForward =
    std::function<torch::Tensor(const torch::Tensor& ids, const torch::Tensor& mask)>;

// `forward` (no grad; the caller sets the modes) on every sequence, in
// chunks of at most `batch_size`: [N, outputs] float32 on `device`, filled
// in place chunk by chunk. In a group of at most N ranks each rank runs its
// chunks alone (distributed::ChunksOfRank) and one sum over the group fills
// in the others' rows (zeros here, so the sum changes no bit): every rank
// holds the whole table, bit for bit, for a world_size-th of the work.
// `*batches` counts the chunks run here.
absl::StatusOr<torch::Tensor> ForwardTable(const SequenceForward& forward,
                                           const std::vector<std::vector<int32_t>>& sequences,
                                           int32_t pad_id, int64_t batch_size,
                                           const torch::Device& device, distributed::Group* group,
                                           int64_t* batches) {
  torch::NoGradGuard no_grad;
  const int64_t n = static_cast<int64_t>(sequences.size());
  if (n == 0) return absl::InvalidArgumentError("no sequence to run the model on");
  const distributed::PassShare pass = distributed::ShareOfPass(n, batch_size, group);
  const bool shared = pass.shared;
  const std::vector<std::vector<int64_t>>& mine = pass.chunks;
  torch::Tensor all;
  const auto run_chunks = [&] {
    for (const std::vector<int64_t>& rows : mine) {
      auto [ids, mask] = PadSequences(Rows(sequences, rows), pad_id, device);
      const torch::Tensor out = forward(ids, mask).to(torch::kFloat);
      if (!all.defined()) {
        // A group sums on the CPU.
        const torch::TensorOptions options = out.options().device(shared ? torch::kCPU : device);
        all = shared ? torch::zeros({n, out.size(1)}, options)
                     : torch::empty({n, out.size(1)}, options);
      }
      all.narrow(0, rows.front(), static_cast<int64_t>(rows.size())).copy_(out);
      if (batches != nullptr) ++*batches;
    }
  };
  if (!shared) {
    run_chunks();
    return all.to(device);
  }
  // Every rank leaves the pass together, whichever failed in it.
  RETURN_IF_ERROR(distributed::RunOnAllRanks(*group, run_chunks));
  RETURN_IF_ERROR(group->Sum({all}));
  return all.to(device);
}

class TextRun {
 public:
  TextRun(const TextTrainerOptions& options, const TextExamples& train,
          const TextExamples* validation)
      : o_(options), hp_(options.hyperparameters), train_(train), validation_(validation) {}

  absl::StatusOr<TextTrainResult> Run() {
    if (!o_.resume_state.empty()) {
      ASSIGN_OR_RETURN(state_, DecodeResumeState(o_.resume_state));
      step_ = state_.global_step;
    }
    RETURN_IF_ERROR(BuildModel());
    device_ = ModuleDevice(split_.backbone);
    BuildOptimizer();
    if (o_.group != nullptr) {
      // Every rank starts from rank 0's weights (the same by construction;
      // this makes it so).
      std::vector<torch::Tensor> tensors;
      for (const torch::jit::Module* m : {&split_.backbone, &split_.head}) {
        for (const torch::Tensor& p : m->parameters()) tensors.push_back(p.detach());
        for (const torch::Tensor& b : m->buffers()) tensors.push_back(b);
      }
      torch::NoGradGuard no_grad;
      RETURN_IF_ERROR(o_.group->Broadcast(tensors, 0));
    }
    if (o_.strategy == kaizen::v1::STRATEGY_FEATURE_EXTRACTION) {
      // The encoder is frozen and in eval mode: its features never change.
      ASSIGN_OR_RETURN(train_features_, EncoderTable(train_.sequences));
      if (validation_ != nullptr) {
        ASSIGN_OR_RETURN(validation_features_, EncoderTable(validation_->sequences));
      }
    }
    if (o_.distillation) {
      teacher_logits_ = o_.distillation->teacher_logits.to(torch::kFloat).to(device_);
    }
    if (o_.incremental) {
      previous_logits_ = o_.incremental->previous_logits.to(torch::kFloat).to(device_);
    }
    at::Generator order_gen =
        at::make_generator<at::CPUGeneratorImpl>(DeriveSeed(hp_.seed(), kOrderStream, 0));
    std::vector<int32_t> lengths;
    for (const auto& s : train_.sequences) lengths.push_back(static_cast<int32_t>(s.size()));
    for (int32_t epoch = state_.epochs_completed + 1; epoch <= hp_.epochs() && !result_.stopped;
         ++epoch) {
      const auto started = std::chrono::steady_clock::now();
      // Each rank its own dropout draws (rank 0 those of one process).
      const uint64_t torch_seed = DeriveSeed(hp_.seed(), kTorchStream, epoch);
      torch::manual_seed(rank_ == 0
                             ? torch_seed
                             : DeriveSeed(torch_seed, kRankStream, static_cast<uint64_t>(rank_)));
      std::vector<int64_t> order = text::LengthBucketedOrder(
          lengths, hp_.batch_size(), DeriveSeed(hp_.seed(), kOrderStream, epoch));
      double loss_sum = 0;
      int64_t correct = 0, seen = 0;
      for (size_t begin = 0; begin < order.size(); begin += hp_.batch_size()) {
        bool stop = o_.should_stop && o_.should_stop();
        if (o_.group != nullptr) {
          ASSIGN_OR_RETURN(stop, o_.group->Any(rank_ == 0 && stop));
        }
        if (stop) {
          result_.stopped = true;
          break;
        }
        const size_t end = std::min(order.size(), begin + static_cast<size_t>(hp_.batch_size()));
        std::vector<int64_t> rows(order.begin() + static_cast<std::ptrdiff_t>(begin),
                                  order.begin() + static_cast<std::ptrdiff_t>(end));
        const size_t global = rows.size();
        if (o_.group != nullptr) rows = distributed::ShardOfBatch(rows, rank_, world_);
        const double factor = schedule_->Factor(step_++);
        for (size_t g = 0; g < base_lrs_.size(); ++g) {
          SetLearningRate(optimizer_->param_groups()[g], base_lrs_[g] * factor);
        }
        optimizer_->zero_grad();
        // A rank without a share of a (last, short) batch adds zeros.
        if (!rows.empty()) {
          const torch::Tensor labels = Labels(train_.labels, rows).to(device_);
          torch::Tensor logits = Logits(rows);
          torch::Tensor loss = teacher_logits_.defined()
                                   ? DistillationLoss(logits, SelectRows(teacher_logits_, rows),
                                                      labels, o_.distillation->temperature,
                                                      o_.distillation->alpha, hp_.label_smoothing())
                               : previous_logits_.defined()
                                   ? IncrementalLoss(logits, SelectRows(previous_logits_, rows),
                                                     labels, o_.incremental->temperature,
                                                     o_.incremental->weight, hp_.label_smoothing())
                                   : SmoothedCrossEntropy(logits, labels, hp_.label_smoothing());
          loss.backward();
          const int64_t n = static_cast<int64_t>(rows.size());
          loss_sum += loss.item<double>() * static_cast<double>(n);
          correct += logits.argmax(1).eq(labels).sum().item<int64_t>();
          seen += n;
        }
        if (o_.group != nullptr) {
          // The gradient of the global batch's mean loss, on every rank.
          RETURN_IF_ERROR(o_.group->ReduceGradients(
              trainable_, static_cast<double>(rows.size()) / static_cast<double>(global)));
        }
        if (hp_.gradient_clip_norm() > 0) {
          torch::nn::utils::clip_grad_norm_(trainable_, hp_.gradient_clip_norm());
        }
        optimizer_->step();
        if (o_.after_update) o_.after_update(step_, trainable_);
      }
      if (result_.stopped) break;  // a partial epoch is not reported
      if (o_.group != nullptr) {
        torch::Tensor sums = torch::tensor(
            {loss_sum, static_cast<double>(correct), static_cast<double>(seen)}, torch::kDouble);
        RETURN_IF_ERROR(o_.group->Sum({sums}));
        loss_sum = sums[0].item<double>();
        correct = static_cast<int64_t>(sums[1].item<double>());
        seen = static_cast<int64_t>(sums[2].item<double>());
      }
      if (seen == 0) break;
      kaizen::v1::EpochMetrics metrics;
      metrics.set_epoch(epoch);
      metrics.set_train_loss(loss_sum / static_cast<double>(seen));
      metrics.set_train_accuracy(static_cast<double>(correct) / static_cast<double>(seen));
      metrics.set_learning_rate(base_lrs_[0] * schedule_->Factor(std::max<int64_t>(0, step_ - 1)));
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      metrics.set_seconds(seconds);
      if (seconds > 0) metrics.set_samples_per_second(static_cast<double>(seen) / seconds);
      if (validation_ != nullptr) RETURN_IF_ERROR(Validate(&metrics));
      const bool maximise = validation_ != nullptr;
      const bool is_best = RecordCheckpointMetric(
          maximise ? metrics.val_accuracy() : metrics.train_loss(), maximise, 0.0, epoch, &state_);
      state_.history.push_back(metrics);
      state_.epochs_completed = epoch;
      state_.global_step = step_;
      if (o_.on_epoch) o_.on_epoch(metrics);
      if (o_.on_checkpoint) RETURN_IF_ERROR(WriteCheckpoint(epoch, is_best));
    }
    ASSIGN_OR_RETURN(result_.classifier, AssembleClassifier(split_, torch::kCPU));
    result_.head_path = AssembledHeadPath(split_);
    result_.epochs = state_.history;
    return std::move(result_);
  }

 private:
  absl::Status WriteCheckpoint(int32_t epoch, bool is_best) {
    TextTrainerOptions::Checkpoint c;
    ASSIGN_OR_RETURN(c.classifier, AssembleClassifier(split_, torch::kCPU));
    c.classifier.eval();
    c.head_path = AssembledHeadPath(split_);
    c.epoch = epoch;
    c.metrics = state_.history.back();
    c.is_best = is_best;
    ResumeState state = state_;
    std::ostringstream out;
    torch::serialize::OutputArchive archive;
    optimizer_->save(archive);
    archive.save_to(out);
    state.optimizer = out.str();
    c.resume_state = EncodeResumeState(state);
    return o_.on_checkpoint(c);
  }

  absl::Status BuildModel() {
    torch::jit::Module base = o_.base;
    kaizen::v1::Model metadata = o_.base_metadata;
    const bool resuming = !o_.resume_state.empty();
    if (o_.strategy == kaizen::v1::STRATEGY_SCRATCH && !resuming) {
      const uint64_t seed = DeriveSeed(hp_.seed(), kInitStream, 0);
      if (absl::StatusOr<models::TextEncoderOptions> built = models::TextEncoderOptionsOf(base);
          built.ok()) {
        built->seed = seed;
        ASSIGN_OR_RETURN(base, models::CreateTextEncoder(*built));
        metadata.mutable_head()->set_module_path("fc");
      } else {
        base = DeepCopyModule(base);
        ReinitializeParameters(base, seed);
      }
    }
    HeadSpec spec;
    spec.kind = kaizen::v1::HEAD_KIND_LINEAR;  // checked by TrainTextClassifier
    spec.num_classes = o_.num_classes;
    spec.seed = DeriveSeed(hp_.seed(), kHeadStream, 0);
    // INCREMENTAL keeps the previous classifier's head and grows it (a
    // resumed run's is grown already).
    const bool incremental = o_.strategy == kaizen::v1::STRATEGY_INCREMENTAL;
    HeadSpec kept = spec;
    if (incremental && !resuming) kept.num_classes = o_.incremental->previous_logits.size(1);
    ASSIGN_OR_RETURN(split_,
                     SplitClassifier(base, metadata, kept, /*keep_head=*/resuming || incremental));
    if (incremental && !resuming) RETURN_IF_ERROR(GrowHead(spec, o_.num_classes, &split_));
    const std::vector<std::string> names = TrainableBackboneParameters(
        split_.backbone, split_.identity_path, o_.strategy, hp_.trainable_blocks());
    const std::set<std::string> trainable(names.begin(), names.end());
    ApplyRequiresGrad(split_.backbone, trainable);
    SetTrainingMode(split_.backbone);
    split_.head.train();
    for (const auto& p : split_.backbone.named_parameters(/*recurse=*/true)) {
      if (trainable.count(p.name)) backbone_params_.push_back(p.value);
    }
    for (const torch::Tensor& p : split_.head.parameters(/*recurse=*/true)) {
      head_params_.push_back(p);
    }
    trainable_ = head_params_;
    trainable_.insert(trainable_.end(), backbone_params_.begin(), backbone_params_.end());
    for (const torch::Tensor& p : trainable_) result_.trainable_parameters += p.numel();
    return absl::OkStatus();
  }

  void BuildOptimizer() {
    const std::vector<ParamGroup> groups =
        MakeParamGroups(o_.strategy, hp_, head_params_, backbone_params_);
    for (const ParamGroup& g : groups) base_lrs_.push_back(g.lr);
    optimizer_ = MakeOptimizer(hp_.optimizer(), groups);
    if (!state_.optimizer.empty()) {
      std::istringstream in(state_.optimizer);
      torch::serialize::InputArchive archive;
      archive.load_from(in, device_);
      optimizer_->load(archive);
    }
    const int64_t steps_per_epoch =
        (static_cast<int64_t>(train_.sequences.size()) + hp_.batch_size() - 1) / hp_.batch_size();
    schedule_ = std::make_unique<LrSchedule>(hp_.schedule(), steps_per_epoch, hp_.epochs());
  }

  static void SetLearningRate(torch::optim::OptimizerParamGroup& group, double lr) {
    torch::optim::OptimizerOptions& options = group.options();
    options.set_lr(lr);
  }

  // The classifier's logits on training examples `rows`.
  torch::Tensor Logits(const std::vector<int64_t>& rows) {
    if (train_features_.defined()) {
      return split_.head.forward({SelectRows(train_features_, rows)}).toTensor();
    }
    auto [ids, mask] = PadSequences(Rows(train_.sequences, rows), o_.pad_id, device_);
    torch::Tensor features = split_.backbone.forward({ids, mask}).toTensor();
    return split_.head.forward({features}).toTensor();
  }

  // Rows `rows` of `all` (per-example values on the device).
  torch::Tensor SelectRows(const torch::Tensor& all, const std::vector<int64_t>& rows) {
    return all.index_select(0, torch::tensor(rows, torch::kLong).to(device_));
  }

  // The frozen encoder's features of `sequences` (FEATURE_EXTRACTION), a
  // share computed by each rank of a group.
  absl::StatusOr<torch::Tensor> EncoderTable(const std::vector<std::vector<int32_t>>& sequences) {
    const SequenceForward encoder = [this](const torch::Tensor& ids, const torch::Tensor& mask) {
      return split_.backbone.forward({ids, mask}).toTensor();
    };
    return ForwardTable(encoder, sequences, o_.pad_id, kInferenceBatch, device_, o_.group,
                        &result_.backbone_forward_batches);
  }

  // The validation loss and accuracy, in eval mode: the logits from the
  // frozen encoder's features, or from the whole model, a share computed by
  // each rank of a group; every rank reports the same figures.
  absl::Status Validate(kaizen::v1::EpochMetrics* metrics) {
    const bool backbone_training = split_.backbone.is_training();
    split_.backbone.eval();
    split_.head.eval();
    torch::Tensor logits;
    if (validation_features_.defined()) {
      torch::NoGradGuard no_grad;
      logits = split_.head.forward({validation_features_}).toTensor();
    } else {
      const SequenceForward model = [this](const torch::Tensor& ids, const torch::Tensor& mask) {
        return split_.head.forward({split_.backbone.forward({ids, mask}).toTensor()}).toTensor();
      };
      ASSIGN_OR_RETURN(
          logits, ForwardTable(model, validation_->sequences, o_.pad_id, kInferenceBatch, device_,
                               o_.group, &result_.backbone_forward_batches));
    }
    const torch::Tensor labels = torch::tensor(validation_->labels, torch::kLong).to(device_);
    metrics->set_val_loss(SmoothedCrossEntropy(logits, labels, 0.0).item<double>());
    metrics->set_val_accuracy(logits.argmax(1).eq(labels).to(torch::kDouble).mean().item<double>());
    if (backbone_training) SetTrainingMode(split_.backbone);
    split_.head.train();
    return absl::OkStatus();
  }

  const TextTrainerOptions& o_;
  const kaizen::v1::Hyperparameters& hp_;
  const TextExamples& train_;
  const TextExamples* validation_;
  SplitModel split_;
  std::vector<torch::Tensor> head_params_, backbone_params_, trainable_;
  std::vector<double> base_lrs_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::unique_ptr<LrSchedule> schedule_;
  // FEATURE_EXTRACTION's frozen encoder features, on the device.
  torch::Tensor train_features_, validation_features_;
  torch::Tensor teacher_logits_;   // DISTILL's, on the device
  torch::Tensor previous_logits_;  // INCREMENTAL's, on the device
  torch::Device device_ = torch::kCPU;
  const int rank_ = o_.group != nullptr ? o_.group->rank() : 0;
  const int world_ = o_.group != nullptr ? o_.group->world_size() : 1;
  int64_t step_ = 0;
  // Epochs completed, the history, the best so far; a resumed run's from its
  // checkpoint.
  ResumeState state_;
  TextTrainResult result_;
};

}  // namespace

kaizen::v1::Hyperparameters DefaultTextHyperparameters(Strategy strategy, int32_t epochs,
                                                       int32_t batch_size) {
  kaizen::v1::Hyperparameters hp;
  hp.set_epochs(epochs);
  hp.set_batch_size(batch_size);
  kaizen::v1::OptimizerOptions* optimizer = hp.mutable_optimizer();
  optimizer->set_kind(kaizen::v1::OPTIMIZER_ADAMW);
  optimizer->set_weight_decay(0.01);
  optimizer->set_beta1(0.9);
  optimizer->set_beta2(0.999);
  kaizen::v1::ScheduleOptions* schedule = hp.mutable_schedule();
  schedule->set_kind(kaizen::v1::SCHEDULE_COSINE);
  schedule->set_warmup_epochs(0.1 * epochs);
  hp.set_gradient_clip_norm(1.0);
  hp.mutable_head()->set_kind(kaizen::v1::HEAD_KIND_LINEAR);
  switch (strategy) {
    case kaizen::v1::STRATEGY_FEATURE_EXTRACTION:
      hp.set_learning_rate(1e-2);
      break;
    case kaizen::v1::STRATEGY_FINE_TUNE:
    case kaizen::v1::STRATEGY_INCREMENTAL:  // continues a classifier as FINE_TUNE does
      hp.set_trainable_blocks(1);
      [[fallthrough]];
    case kaizen::v1::STRATEGY_FULL:
      hp.set_learning_rate(1e-3);
      hp.set_backbone_lr_multiplier(0.1);
      break;
    default:
      hp.set_learning_rate(1e-3);
      hp.set_backbone_lr_multiplier(1.0);
      break;
  }
  return hp;
}

absl::Status CheckTokenSequences(const std::vector<std::vector<int32_t>>& sequences,
                                 int64_t vocab_size, int64_t max_length, absl::string_view what,
                                 absl::string_view vocabulary) {
  const std::string prefix = what.empty() ? "" : absl::StrCat(what, " ");
  for (size_t i = 0; i < sequences.size(); ++i) {
    const std::vector<int32_t>& s = sequences[i];
    if (s.empty())
      return absl::InvalidArgumentError(absl::StrCat(prefix, "sequence ", i, " is empty"));
    if (max_length > 0 && static_cast<int64_t>(s.size()) > max_length) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%ssequence %d has %d tokens; the encoder takes at most %d", prefix, i,
                          s.size(), max_length));
    }
    if (vocab_size <= 0) continue;
    for (int32_t id : s) {
      if (id < 0 || id >= vocab_size) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%ssequence %d holds id %d, outside %s [0, %d)", prefix, i, id,
                            vocabulary, vocab_size));
      }
    }
  }
  return absl::OkStatus();
}

torch::Device ModuleDevice(const torch::jit::Module& module) {
  for (const torch::Tensor& p : module.parameters(/*recurse=*/true)) return p.device();
  return torch::kCPU;
}

std::pair<torch::Tensor, torch::Tensor> PadSequences(const std::vector<std::vector<int32_t>>& rows,
                                                     int32_t pad_id, const torch::Device& device) {
  text::PaddedBatch padded = text::PadToLongest(rows, pad_id);
  const std::vector<int64_t> shape = {padded.rows, padded.length};
  torch::Tensor ids =
      torch::from_blob(padded.input_ids.data(), shape, torch::kInt).to(torch::kLong);
  torch::Tensor mask =
      torch::from_blob(padded.attention_mask.data(), shape, torch::kUInt8).to(torch::kLong);
  return {ids.to(device), mask.to(device)};
}

absl::StatusOr<TextTrainResult> TrainTextClassifier(const TextTrainerOptions& options,
                                                    const TextExamples& train,
                                                    const TextExamples* validation) {
  switch (options.strategy) {
    case kaizen::v1::STRATEGY_FEATURE_EXTRACTION:
    case kaizen::v1::STRATEGY_FINE_TUNE:
    case kaizen::v1::STRATEGY_FULL:
    case kaizen::v1::STRATEGY_SCRATCH:
    case kaizen::v1::STRATEGY_DISTILL:
    case kaizen::v1::STRATEGY_INCREMENTAL:
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "text classifiers train with FEATURE_EXTRACTION, FINE_TUNE, FULL, SCRATCH, DISTILL or "
          "INCREMENTAL, not ",
          kaizen::v1::Strategy_Name(options.strategy)));
  }
  const bool incremental = options.strategy == kaizen::v1::STRATEGY_INCREMENTAL;
  if (incremental != options.incremental.has_value()) {
    return absl::InvalidArgumentError(
        incremental ? "STRATEGY_INCREMENTAL needs the previous classifier's logits"
                    : "previous logits are given but the strategy is not STRATEGY_INCREMENTAL");
  }
  if (incremental) {
    const torch::Tensor& p = options.incremental->previous_logits;
    if (!p.defined() || p.dim() != 2 || p.size(0) != static_cast<int64_t>(train.sequences.size()) ||
        p.size(1) < 2 || p.size(1) > options.num_classes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the previous classifier's logits must be [", train.sequences.size(),
          ", K] with 2 <= K <= ", options.num_classes, ", not ",
          p.defined() ? absl::StrCat("[", absl::StrJoin(p.sizes(), ", "), "]") : "none"));
    }
  }
  if (options.num_classes < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("a classifier needs at least 2 classes, got ", options.num_classes));
  }
  const bool distill = options.strategy == kaizen::v1::STRATEGY_DISTILL;
  if (distill != options.distillation.has_value()) {
    return absl::InvalidArgumentError(distill ? "STRATEGY_DISTILL needs the teacher's logits"
                                              : "teacher logits are given but the strategy is not "
                                                "STRATEGY_DISTILL");
  }
  if (distill) {
    const torch::Tensor& t = options.distillation->teacher_logits;
    if (!t.defined() || t.dim() != 2 || t.size(0) != static_cast<int64_t>(train.sequences.size()) ||
        t.size(1) != options.num_classes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the teacher's logits must be [", train.sequences.size(), ", ", options.num_classes,
          "] (one row per training example, one column per class), not ",
          t.defined() ? absl::StrCat("[", absl::StrJoin(t.sizes(), ", "), "]") : "none"));
    }
  }
  const kaizen::v1::Hyperparameters& hp = options.hyperparameters;
  if (hp.epochs() < 1 || hp.batch_size() < 1 || !(hp.learning_rate() > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("epochs, batch_size and learning_rate must be positive; got ", hp.epochs(),
                     ", ", hp.batch_size(), ", ", hp.learning_rate()));
  }
  if (hp.head().kind() == kaizen::v1::HEAD_KIND_MLP) {
    return absl::InvalidArgumentError(
        "hyperparameters.head.kind is HEAD_KIND_MLP; text classifiers take a LINEAR head");
  }
  if (options.group != nullptr && !ModuleDevice(options.base).is_cpu()) {
    return absl::InvalidArgumentError("data-parallel text training runs on the CPU (Gloo)");
  }
  RETURN_IF_ERROR(CheckExamples(train, options.num_classes, "training"));
  if (validation != nullptr && validation->sequences.empty()) validation = nullptr;
  if (validation != nullptr) {
    RETURN_IF_ERROR(CheckExamples(*validation, options.num_classes, "validation"));
  }
  if (absl::StatusOr<models::TextEncoderOptions> shape = models::TextEncoderOptionsOf(options.base);
      shape.ok()) {
    RETURN_IF_ERROR(CheckFitsEncoder(train, *shape, "training"));
    if (validation != nullptr) RETURN_IF_ERROR(CheckFitsEncoder(*validation, *shape, "validation"));
  }
  try {
    return TextRun(options, train, validation).Run();
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("training the text classifier failed: ", e.what()));
  }
}

absl::StatusOr<TextPredictions> PredictText(torch::jit::Module& classifier,
                                            const std::vector<std::vector<int32_t>>& sequences,
                                            int32_t pad_id, int64_t batch_size) {
  if (sequences.empty()) return absl::InvalidArgumentError("no sequence to predict");
  if (batch_size < 1) return absl::InvalidArgumentError("batch_size must be at least 1");
  RETURN_IF_ERROR(CheckTokenSequences(sequences, /*vocab_size=*/0, /*max_length=*/0, ""));
  try {
    classifier.eval();
    TextPredictions predictions;
    const SequenceForward model = [&classifier](const torch::Tensor& ids,
                                                const torch::Tensor& mask) {
      return classifier.forward({ids, mask}).toTensor();
    };
    ASSIGN_OR_RETURN(predictions.logits, ForwardTable(model, sequences, pad_id, batch_size,
                                                      ModuleDevice(classifier), nullptr, nullptr));
    predictions.logits = predictions.logits.cpu();
    const torch::Tensor best = predictions.logits.argmax(1);
    predictions.classes.assign(best.data_ptr<int64_t>(), best.data_ptr<int64_t>() + best.numel());
    return predictions;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("predicting failed: ", e.what()));
  }
}

}  // namespace kaizen::training
