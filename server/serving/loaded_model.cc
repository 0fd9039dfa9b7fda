#include "server/serving/loaded_model.h"

#include <torch/torch.h>

#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/logging.h"
#include "server/models/model_metadata.h"
#include "server/models/torch_errors.h"

namespace kaizen::serving {
namespace {

// Runs the module on `x` and returns its logits, which must be [N, K]. A
// text model's `x` holds ids with -1 at padding: it gets them as input_ids
// (padding holding `pad_id`) and attention_mask.
torch::Tensor Logits(torch::jit::Module& module, const torch::Tensor& x,
                     std::optional<int64_t> pad_id = std::nullopt) {
  torch::jit::IValue out;
  if (pad_id.has_value()) {
    const torch::Tensor mask = x.ge(0);
    out = module.forward({x.masked_fill(mask.logical_not(), *pad_id), mask.to(torch::kLong)});
  } else {
    out = module.forward({x});
  }
  if (!out.isTensor()) {
    throw std::runtime_error(
        absl::StrCat("forward() returned ", out.tagKind(), "; a classifier must return a tensor"));
  }
  torch::Tensor logits = out.toTensor();
  if (logits.dim() != 2 || logits.size(0) != x.size(0)) {
    throw std::runtime_error(absl::StrCat("forward() returned shape [",
                                          absl::StrJoin(logits.sizes(), ", "), "] for a batch of ",
                                          x.size(0), "; a classifier must return [N, classes]"));
  }
  return logits;
}

}  // namespace

LoadedModel::LoadedModel(torch::jit::Module module, kaizen::v1::Model metadata,
                         torch::Device device)
    : module_(std::move(module)),
      metadata_(std::move(metadata)),
      device_(device),
      input_shape_(metadata_.input_shape().begin(), metadata_.input_shape().end()) {}

absl::StatusOr<std::shared_ptr<const LoadedModel>> LoadedModel::Load(
    const std::string& path, kaizen::v1::Model metadata, const torch::Device& device,
    const std::vector<int64_t>& warmup_batch_sizes, bool optimize) {
  const std::string what =
      absl::StrCat("model \"", metadata.name(), "\" version ", metadata.version());
  std::optional<training::TextModelInput> text;
  if (metadata.has_text_input()) {
    const training::TextModelLimits limits;
    absl::StatusOr<std::string> tokenizer =
        models::ReadModelTokenizer(path, limits.max_tokenizer_bytes);
    if (!tokenizer.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(what, ": ", tokenizer.status().message()));
    }
    absl::StatusOr<training::TextModelInput> input =
        training::TextModelInput::Load(metadata.text_input(), *tokenizer, limits);
    if (!input.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(what, ": ", input.status().message()));
    }
    text = *std::move(input);
    optimize = false;
  } else if (metadata.input_shape_size() != 3) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, " has no [C, H, W] input shape in its metadata"));
  }
  try {
    torch::jit::Module module = torch::jit::load(path, device);
    module.eval();
    bool optimized = false;
    if (optimize) {
      try {
        torch::jit::Module frozen = torch::jit::freeze(module);
        module = device.is_cpu() ? torch::jit::optimize_for_inference(frozen) : frozen;
        optimized = true;
      } catch (const std::exception& e) {
        common::LogWarning("model served without inference optimisation",
                           {{"model", metadata.name()},
                            {"version", metadata.version()},
                            {"error", models::TorchErrorSummary(e)}});
      }
    }
    std::shared_ptr<LoadedModel> m(new LoadedModel(std::move(module), std::move(metadata), device));
    m->optimized_ = optimized;
    m->text_ = std::move(text);
    c10::InferenceMode guard;
    std::vector<int64_t> shape = {1};
    std::optional<int64_t> pad;
    if (m->text_) {
      // A few padding ids, all attended to: a valid input for any vocabulary.
      shape.push_back(4);
      pad = m->text_->input().pad_id();
    } else {
      shape.insert(shape.end(), m->input_shape_.begin(), m->input_shape_.end());
    }
    const auto example = [&] {
      return m->text_ ? torch::full(shape, *pad, torch::TensorOptions(device).dtype(torch::kLong))
                      : torch::zeros(shape, torch::TensorOptions(device));
    };
    m->num_classes_ = Logits(m->module_, example(), pad).size(1);
    if (m->metadata_.class_names_size() > 0 && m->metadata_.class_names_size() != m->num_classes_) {
      return absl::FailedPreconditionError(
          absl::StrCat(what, " has ", m->metadata_.class_names_size(), " class names but returns ",
                       m->num_classes_, " scores"));
    }
    // The profiling executor optimises a graph after a few runs per shape.
    for (int64_t batch : warmup_batch_sizes) {
      shape[0] = batch;
      for (int i = 0; i < 2; ++i) Logits(m->module_, example(), pad);
    }
    return std::shared_ptr<const LoadedModel>(std::move(m));
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("cannot load ", what, ": ", models::TorchErrorSummary(e)));
  }
}

absl::StatusOr<torch::Tensor> LoadedModel::Predict(const torch::Tensor& batch) const {
  try {
    c10::InferenceMode guard;
    std::optional<int64_t> pad;
    if (text_) pad = text_->input().pad_id();
    torch::Tensor logits = Logits(module_, batch.to(device_), pad);
    return torch::softmax(logits.to(torch::kFloat), 1).to(torch::kCPU).contiguous();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("model \"", name(), "\" version ", version(),
                                            " failed: ", models::TorchErrorSummary(e)));
  }
}

absl::StatusOr<torch::Tensor> LoadedModel::EncodeText(absl::string_view text) const {
  if (!text_) {
    return absl::FailedPreconditionError(
        absl::StrCat("model \"", name(), "\" version ", version(), " is not a text model"));
  }
  absl::StatusOr<std::vector<int32_t>> ids =
      text_->Encode(std::string_view(text.data(), text.size()));
  if (!ids.ok()) return ids.status();
  return torch::tensor(std::vector<int64_t>(ids->begin(), ids->end()), torch::kLong).unsqueeze(0);
}

torch::Tensor JoinBatches(const std::vector<torch::Tensor>& batches) {
  if (batches.size() == 1) return batches[0];
  if (batches.empty() || batches[0].scalar_type() != torch::kLong) return torch::cat(batches);
  int64_t longest = 0;
  for (const torch::Tensor& b : batches) longest = std::max(longest, b.size(1));
  std::vector<torch::Tensor> padded;
  padded.reserve(batches.size());
  for (const torch::Tensor& b : batches) {
    padded.push_back(
        b.size(1) == longest ? b : torch::constant_pad_nd(b, {0, longest - b.size(1)}, -1));
  }
  return torch::cat(padded);
}

std::string LoadedModel::Label(int64_t index) const {
  if (index >= 0 && index < metadata_.class_names_size()) return metadata_.class_names(index);
  return absl::StrCat(index);
}

}  // namespace kaizen::serving
