#include "server/training/masked_lm.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <memory>
#include <numeric>
#include <sstream>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/text/sequences.h"
#include "server/training/batch_sampler.h"
#include "server/training/resume_state.h"
#include "server/training/text_trainer.h"

namespace kaizen::training {
namespace {

absl::Status CheckSequences(const std::vector<std::vector<int32_t>>& sequences,
                            int64_t vocab_size) {
  if (sequences.empty()) return absl::InvalidArgumentError("no sequence to train on");
  return CheckTokenSequences(sequences, vocab_size, /*max_length=*/0, "");
}

// The sequences at order[begin, end) padded to their longest, as int64
// tensors on `device`.
std::pair<torch::Tensor, torch::Tensor> Batch(const std::vector<std::vector<int32_t>>& sequences,
                                              const std::vector<int64_t>& order, size_t begin,
                                              size_t end, int64_t pad_id,
                                              const torch::Device& device) {
  std::vector<std::vector<int32_t>> rows;
  rows.reserve(end - begin);
  for (size_t i = begin; i < end; ++i) rows.push_back(sequences[order[i]]);
  return PadSequences(rows, static_cast<int32_t>(pad_id), device);
}

// InvalidArgument when the sequences do not fit `model`'s encoder (as
// CreateMaskedLanguageModel wraps it): a vocabulary of another size, or a
// sequence longer than its positions. Caught here, not as an index error in
// the middle of training (or a device-side assert on a GPU).
absl::Status CheckModelFits(const torch::jit::Module& model, int64_t vocab_size,
                            const std::vector<std::vector<int32_t>>& sequences) {
  if (!model.hasattr("encoder") || !model.attr("encoder").isModule()) return absl::OkStatus();
  const torch::jit::Module encoder = model.attr("encoder").toModule();
  if (!encoder.hasattr("embeddings") || !encoder.attr("embeddings").isModule()) {
    return absl::OkStatus();
  }
  const torch::jit::Module embeddings = encoder.attr("embeddings").toModule();
  if (embeddings.hasattr("word_embeddings") && embeddings.attr("word_embeddings").isTensor()) {
    const int64_t rows = embeddings.attr("word_embeddings").toTensor().size(0);
    if (rows != vocab_size) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "masking.vocab_size is %d but the encoder's vocabulary holds %d ids", vocab_size, rows));
    }
  }
  if (embeddings.hasattr("position_embeddings") &&
      embeddings.attr("position_embeddings").isTensor()) {
    const int64_t positions = embeddings.attr("position_embeddings").toTensor().size(0);
    return CheckTokenSequences(sequences, /*vocab_size=*/0, positions, "");
  }
  return absl::OkStatus();
}

// Seed streams (DeriveSeed), each reseeded at every epoch: LibTorch's
// default generator (dropout) and the masking.
constexpr uint64_t kTorchStream = 1;
constexpr uint64_t kMaskStream = 2;

// The wrapper's parameters outside its encoder (the prediction head), in
// named_parameters() order, which is fixed.
std::vector<torch::jit::Named<torch::Tensor>> HeadParameters(const torch::jit::Module& model) {
  std::vector<torch::jit::Named<torch::Tensor>> head;
  for (const auto& p : model.named_parameters(/*recurse=*/true)) {
    if (!absl::StartsWith(p.name, "encoder.")) head.push_back(p);
  }
  return head;
}

// The head's parameters by position (archive keys cannot hold the dots of
// "dense.weight"), on the CPU.
std::string SaveHead(const torch::jit::Module& model) {
  torch::serialize::OutputArchive archive;
  int i = 0;
  for (const auto& p : HeadParameters(model)) {
    archive.write(absl::StrCat("p", i++), p.value.detach().cpu());
  }
  std::ostringstream out;
  archive.save_to(out);
  return out.str();
}

// SaveHead's bytes back into `model`'s head; InvalidArgument when their
// count or shapes differ. Throws (a LibTorch error) when they do not parse.
absl::Status RestoreHead(torch::jit::Module& model, const std::string& bytes) {
  std::istringstream in(bytes);
  torch::serialize::InputArchive archive;
  archive.load_from(in, torch::kCPU);
  const std::vector<torch::jit::Named<torch::Tensor>> head = HeadParameters(model);
  std::vector<torch::Tensor> saved(head.size());
  for (size_t i = 0; i < head.size(); ++i) {
    if (!archive.try_read(absl::StrCat("p", i), saved[i]) ||
        saved[i].sizes() != head[i].value.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the resume state's masked-language-model head does not fit the model (parameter ",
          head[i].name, ")"));
    }
  }
  torch::Tensor extra;
  if (archive.try_read(absl::StrCat("p", head.size()), extra)) {
    return absl::InvalidArgumentError(
        "the resume state's masked-language-model head has more parameters than the model's");
  }
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < head.size(); ++i) head[i].value.copy_(saved[i]);
  return absl::OkStatus();
}

// Linear warm-up to 1 over `warmup` steps, then linear decay to 0 at `total`.
double LearningRateFactor(int64_t step, int64_t warmup, int64_t total) {
  if (step < warmup) return static_cast<double>(step + 1) / static_cast<double>(warmup);
  if (total <= warmup) return 1.0;
  return std::max(0.0, static_cast<double>(total - step) / static_cast<double>(total - warmup));
}

}  // namespace

absl::Status ValidateMaskingOptions(const MaskingOptions& o) {
  auto share = [](double v) { return v >= 0.0 && v <= 1.0; };
  if (!share(o.mask_probability) || !share(o.replace_with_mask) || !share(o.replace_with_random) ||
      o.replace_with_mask + o.replace_with_random > 1.0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "masking shares must be in [0, 1] with replace_with_mask + replace_with_random <= 1; got "
        "mask_probability ",
        o.mask_probability, ", replace_with_mask ", o.replace_with_mask, ", replace_with_random ",
        o.replace_with_random));
  }
  if (o.vocab_size < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("masking needs a vocabulary of at least 2 ids, got ", o.vocab_size));
  }
  if (o.mask_id < 0 || o.mask_id >= o.vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrFormat("mask_id %d is outside the vocabulary [0, %d)", o.mask_id, o.vocab_size));
  }
  return absl::OkStatus();
}

MaskedBatch MaskTokens(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                       const MaskingOptions& o, at::Generator& generator) {
  const torch::Tensor ids = input_ids.to(torch::kCPU, torch::kLong);
  torch::Tensor eligible = attention_mask.to(torch::kCPU).ne(0);
  for (int64_t id : o.never_mask) eligible = eligible.logical_and(ids.ne(id));
  const auto sizes = ids.sizes();
  const auto uniform = [&] {
    return at::empty(sizes, torch::kFloat).uniform_(0.0, 1.0, generator);
  };

  torch::Tensor chosen = eligible.logical_and(uniform().lt(o.mask_probability));
  if (!chosen.any().item<bool>() && eligible.any().item<bool>()) {
    const int64_t at_random =
        uniform().masked_fill(eligible.logical_not(), -1.0).argmax().item<int64_t>();
    chosen = chosen.contiguous();
    chosen.view({-1})[at_random] = true;
  }
  const torch::Tensor labels = ids.masked_fill(chosen.logical_not(), kNotPredicted);
  const torch::Tensor action = uniform();
  const torch::Tensor to_mask = chosen.logical_and(action.lt(o.replace_with_mask));
  const torch::Tensor to_random =
      chosen.logical_and(action.ge(o.replace_with_mask))
          .logical_and(action.lt(o.replace_with_mask + o.replace_with_random));
  const torch::Tensor random_ids =
      at::randint(0, o.vocab_size, sizes, generator, torch::TensorOptions(torch::kLong));
  torch::Tensor masked = torch::where(to_random, random_ids, ids.masked_fill(to_mask, o.mask_id));
  return {masked.to(input_ids.device()), labels.to(input_ids.device())};
}

torch::Tensor MaskedLanguageModelLoss(const torch::Tensor& logits, const torch::Tensor& labels) {
  const int64_t vocab = logits.size(-1);
  return at::cross_entropy_loss(logits.reshape({-1, vocab}).to(torch::kFloat), labels.reshape({-1}),
                                /*weight=*/{}, at::Reduction::Mean, kNotPredicted);
}

absl::StatusOr<PretrainResult> PretrainMaskedLanguageModel(
    torch::jit::Module& model, const std::vector<std::vector<int32_t>>& sequences,
    const PretrainOptions& options) {
  if (absl::Status s = ValidateMaskingOptions(options.masking); !s.ok()) return s;
  if (absl::Status s = CheckSequences(sequences, options.masking.vocab_size); !s.ok()) return s;
  if (absl::Status s = CheckModelFits(model, options.masking.vocab_size, sequences); !s.ok()) {
    return s;
  }
  if (options.epochs < 1 || options.batch_size < 1 || !(options.learning_rate > 0) ||
      !(options.weight_decay >= 0) || !(options.warmup_share >= 0 && options.warmup_share < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pretraining needs epochs >= 1, batch_size >= 1, learning_rate > 0, weight_decay >= 0 "
        "and warmup_share in [0, 1); got ",
        options.epochs, ", ", options.batch_size, ", ", options.learning_rate, ", ",
        options.weight_decay, ", ", options.warmup_share));
  }
  ResumeState state;
  state.seed = options.seed;
  if (!options.resume.empty()) {
    absl::StatusOr<ResumeState> decoded = DecodeResumeState(options.resume);
    if (!decoded.ok()) return decoded.status();
    state = *std::move(decoded);
    if (state.seed != options.seed || state.epochs_completed < 1 ||
        state.epochs_completed >= options.epochs || state.masked_lm_head.empty() ||
        state.history.size() != static_cast<size_t>(state.epochs_completed)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "the resume state does not continue this run: it is after epoch %d of seed %d with %d "
          "epochs of history and %s head; this run has %d epochs and seed %d",
          state.epochs_completed, state.seed, state.history.size(),
          state.masked_lm_head.empty() ? "no" : "a", options.epochs, options.seed));
    }
  }
  const torch::Device device = ModuleDevice(model);
  std::vector<int32_t> lengths;
  lengths.reserve(sequences.size());
  for (const auto& s : sequences) lengths.push_back(static_cast<int32_t>(s.size()));
  const int64_t n = static_cast<int64_t>(sequences.size());
  const int64_t steps_per_epoch = (n + options.batch_size - 1) / options.batch_size;
  const int64_t total = steps_per_epoch * options.epochs;
  const int64_t warmup = std::max<int64_t>(
      1, static_cast<int64_t>(std::llround(options.warmup_share * static_cast<double>(total))));

  PretrainResult result;
  result.steps = state.global_step;
  for (const kaizen::v1::EpochMetrics& m : state.history) {
    result.epoch_losses.push_back(m.train_loss());
  }
  try {
    if (!state.masked_lm_head.empty()) {
      if (absl::Status s = RestoreHead(model, state.masked_lm_head); !s.ok()) return s;
    }
    // BERT leaves biases and LayerNorm weights (every 1-D parameter) out of
    // weight decay.
    std::vector<torch::Tensor> decayed, plain;
    for (torch::Tensor p : model.parameters(/*recurse=*/true)) {
      // A module cloned while gradients were on holds results of clone(),
      // not leaves; the optimizer takes leaves only.
      if (!p.is_leaf()) p.detach_();
      p.requires_grad_(true);
      (p.dim() > 1 ? decayed : plain).push_back(p);
    }
    std::vector<torch::Tensor> all = decayed;
    all.insert(all.end(), plain.begin(), plain.end());
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(
        decayed,
        std::make_unique<torch::optim::AdamWOptions>(
            torch::optim::AdamWOptions(options.learning_rate).weight_decay(options.weight_decay)));
    groups.emplace_back(plain,
                        std::make_unique<torch::optim::AdamWOptions>(
                            torch::optim::AdamWOptions(options.learning_rate).weight_decay(0)));
    torch::optim::AdamW optimizer(std::move(groups),
                                  torch::optim::AdamWOptions(options.learning_rate));
    if (!state.optimizer.empty()) {
      std::istringstream in(state.optimizer);
      torch::serialize::InputArchive archive;
      archive.load_from(in, device);
      optimizer.load(archive);
    }
    model.train();
    for (int32_t epoch = state.epochs_completed + 1; epoch <= options.epochs; ++epoch) {
      const auto e = static_cast<uint64_t>(epoch);
      torch::manual_seed(DeriveSeed(options.seed, kTorchStream, e));
      at::Generator generator =
          at::make_generator<at::CPUGeneratorImpl>(DeriveSeed(options.seed, kMaskStream, e));
      const std::vector<int64_t> order =
          text::LengthBucketedOrder(lengths, options.batch_size, options.seed + e);
      double loss_sum = 0;
      int64_t predicted = 0;
      for (size_t begin = 0; begin < order.size(); begin += options.batch_size) {
        if (options.should_stop && options.should_stop()) {
          result.stopped = true;
          return result;
        }
        const size_t end = std::min(order.size(), begin + static_cast<size_t>(options.batch_size));
        auto [ids, mask] = Batch(sequences, order, begin, end, options.pad_id, device);
        MaskedBatch masked = MaskTokens(ids, mask, options.masking, generator);
        // Texts of framing tokens alone leave nothing to predict: no step
        // (the loss of no prediction is NaN).
        const int64_t count = masked.labels.ne(kNotPredicted).sum().item<int64_t>();
        if (count == 0) continue;
        const double factor = LearningRateFactor(result.steps, warmup, total);
        for (auto& group : optimizer.param_groups()) {
          group.options().set_lr(options.learning_rate * factor);
        }
        optimizer.zero_grad();
        torch::Tensor logits = model.forward({masked.input_ids, mask}).toTensor();
        torch::Tensor loss = MaskedLanguageModelLoss(logits, masked.labels);
        loss.backward();
        torch::nn::utils::clip_grad_norm_(all, 1.0);
        optimizer.step();
        loss_sum += loss.item<double>() * static_cast<double>(count);
        predicted += count;
        ++result.steps;
      }
      if (predicted == 0) {
        return absl::InvalidArgumentError(
            "no sequence holds a token to predict (only framing tokens or never_mask ids)");
      }
      result.epoch_losses.push_back(loss_sum / static_cast<double>(predicted));
      PretrainEpoch done;
      done.metrics.set_epoch(epoch);
      done.metrics.set_train_loss(result.epoch_losses.back());
      if (options.validation_loss) {
        absl::StatusOr<double> val = options.validation_loss();
        model.train();
        if (absl::IsCancelled(val.status())) {
          result.stopped = true;
          result.epoch_losses.pop_back();  // the epoch is not kept
          return result;
        }
        if (!val.ok()) return val.status();
        done.metrics.set_val_loss(*val);
      }
      const double metric =
          options.validation_loss ? done.metrics.val_loss() : done.metrics.train_loss();
      // A NaN is never the best, nor kept as the one to beat.
      done.is_best = !std::isnan(metric) && (!state.has_best || std::isnan(state.best_metric) ||
                                             metric < state.best_metric);
      if (done.is_best) {
        state.has_best = true;
        state.best_metric = metric;
        state.best_epoch = epoch;
      }
      state.epochs_completed = epoch;
      state.global_step = result.steps;
      state.history.push_back(done.metrics);
      if (options.on_epoch) {
        std::ostringstream saved;
        torch::serialize::OutputArchive archive;
        optimizer.save(archive);
        archive.save_to(saved);
        state.optimizer = saved.str();
        state.masked_lm_head = SaveHead(model);
        done.resume_state = EncodeResumeState(state);
        if (absl::Status s = options.on_epoch(done); !s.ok()) return s;
      }
    }
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("masked-language-model pretraining failed: ", e.what()));
  }
  return result;
}

absl::StatusOr<double> EvaluateMaskedLanguageModel(
    torch::jit::Module& model, const std::vector<std::vector<int32_t>>& sequences,
    const MaskingOptions& masking, int64_t pad_id, int64_t batch_size, uint64_t seed,
    const std::function<bool()>& should_stop) {
  if (absl::Status s = ValidateMaskingOptions(masking); !s.ok()) return s;
  if (absl::Status s = CheckSequences(sequences, masking.vocab_size); !s.ok()) return s;
  if (absl::Status s = CheckModelFits(model, masking.vocab_size, sequences); !s.ok()) return s;
  if (batch_size < 1) return absl::InvalidArgumentError("batch_size must be at least 1");
  const torch::Device device = ModuleDevice(model);
  std::vector<int64_t> order(sequences.size());
  std::iota(order.begin(), order.end(), 0);
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  const bool was_training = model.is_training();
  double loss_sum = 0;
  int64_t predicted = 0;
  try {
    model.eval();
    torch::NoGradGuard no_grad;
    for (size_t begin = 0; begin < order.size(); begin += batch_size) {
      if (should_stop && should_stop()) {
        model.train(was_training);
        return absl::CancelledError("the masked-language-model evaluation was stopped");
      }
      const size_t end = std::min(order.size(), begin + static_cast<size_t>(batch_size));
      auto [ids, mask] = Batch(sequences, order, begin, end, pad_id, device);
      MaskedBatch masked = MaskTokens(ids, mask, masking, generator);
      const int64_t count = masked.labels.ne(kNotPredicted).sum().item<int64_t>();
      if (count == 0) continue;
      torch::Tensor logits = model.forward({masked.input_ids, mask}).toTensor();
      loss_sum += MaskedLanguageModelLoss(logits, masked.labels).item<double>() *
                  static_cast<double>(count);
      predicted += count;
    }
  } catch (const std::exception& e) {
    model.train(was_training);
    return absl::InternalError(absl::StrCat("masked-language-model evaluation failed: ", e.what()));
  }
  model.train(was_training);
  if (predicted == 0) return absl::InvalidArgumentError("no position could be masked");
  return loss_sum / static_cast<double>(predicted);
}

}  // namespace kaizen::training
