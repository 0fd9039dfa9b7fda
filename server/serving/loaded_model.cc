#include "server/serving/loaded_model.h"

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/logging.h"
#include "server/models/torch_errors.h"

namespace kaizen::serving {
namespace {

// Runs the module on `x` and returns its logits, which must be [N, K].
torch::Tensor Logits(torch::jit::Module& module, const torch::Tensor& x) {
  torch::jit::IValue out = module.forward({x});
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
  if (metadata.input_shape_size() != 3) {
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
    c10::InferenceMode guard;
    std::vector<int64_t> shape = {1};
    shape.insert(shape.end(), m->input_shape_.begin(), m->input_shape_.end());
    m->num_classes_ = Logits(m->module_, torch::zeros(shape, torch::TensorOptions(device))).size(1);
    if (m->metadata_.class_names_size() > 0 && m->metadata_.class_names_size() != m->num_classes_) {
      return absl::FailedPreconditionError(
          absl::StrCat(what, " has ", m->metadata_.class_names_size(), " class names but returns ",
                       m->num_classes_, " scores"));
    }
    // The profiling executor optimises a graph after a few runs per shape.
    for (int64_t batch : warmup_batch_sizes) {
      shape[0] = batch;
      for (int i = 0; i < 2; ++i)
        Logits(m->module_, torch::zeros(shape, torch::TensorOptions(device)));
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
    torch::Tensor logits = Logits(module_, batch.to(device_));
    return torch::softmax(logits.to(torch::kFloat), 1).to(torch::kCPU).contiguous();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("model \"", name(), "\" version ", version(),
                                            " failed: ", models::TorchErrorSummary(e)));
  }
}

std::string LoadedModel::Label(int64_t index) const {
  if (index >= 0 && index < metadata_.class_names_size()) return metadata_.class_names(index);
  return absl::StrCat(index);
}

}  // namespace kaizen::serving
