#include "server/training/freezing.h"

#include <algorithm>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/models/text_encoder.h"

namespace kaizen::training {
namespace {

bool Within(const std::string& name, const std::string& prefix) {
  return !prefix.empty() && (name == prefix || absl::StartsWith(name, absl::StrCat(prefix, ".")));
}

// Children of `m` (prefixed with `prefix`) that have parameters outside head_path.
std::vector<std::string> ChildrenWithParameters(const torch::jit::Module& m,
                                                const std::string& prefix,
                                                const std::string& head_path) {
  std::vector<std::string> out;
  for (const auto& child : m.named_children()) {
    const std::string name = prefix.empty() ? child.name : absl::StrCat(prefix, ".", child.name);
    for (const auto& p : child.value.named_parameters(/*recurse=*/true)) {
      if (!Within(absl::StrCat(name, ".", p.name), head_path)) {
        out.push_back(name);
        break;
      }
    }
  }
  return out;
}

}  // namespace

std::vector<std::string> ListBlocks(const torch::jit::Module& backbone,
                                    const std::string& head_path) {
  // An uploaded text encoder's wrapper names its blocks (text_encoder.h).
  // The attribute comes with the file: only names of submodules with
  // parameters outside the head count.
  const std::string listed(models::kBlocksAttribute);
  if (backbone.hasattr(listed) && backbone.attr(listed).isList()) {
    std::set<std::string> with_parameters;
    for (const auto& m : backbone.named_modules()) {
      for (const auto& p : m.value.named_parameters(/*recurse=*/true)) {
        if (!Within(m.name.empty() ? p.name : absl::StrCat(m.name, ".", p.name), head_path)) {
          with_parameters.insert(m.name);
          break;
        }
      }
    }
    std::vector<std::string> blocks;
    for (const c10::IValue& v : backbone.attr(listed).toListRef()) {
      if (v.isString() && !v.toStringRef().empty() && !Within(v.toStringRef(), head_path) &&
          with_parameters.count(v.toStringRef()) > 0) {
        blocks.push_back(v.toStringRef());
      }
    }
    if (!blocks.empty()) return blocks;
  }
  std::vector<std::string> blocks = ChildrenWithParameters(backbone, "", head_path);
  while (blocks.size() == 1) {
    torch::jit::Module only = backbone;
    for (const auto& m : backbone.named_modules()) {
      if (m.name == blocks[0]) only = m.value;
    }
    std::vector<std::string> inner = ChildrenWithParameters(only, blocks[0], head_path);
    if (inner.size() < 2) break;
    blocks = std::move(inner);
  }
  return blocks;
}

std::vector<std::string> TrainableBackboneParameters(const torch::jit::Module& backbone,
                                                     const std::string& head_path,
                                                     kaizen::v1::Strategy strategy,
                                                     int32_t trainable_blocks) {
  std::vector<std::string> names;
  if (strategy == kaizen::v1::STRATEGY_FEATURE_EXTRACTION) return names;
  std::vector<std::string> top;
  bool all = true;
  // INCREMENTAL continues a fine-tuned model as FINE_TUNE does.
  if (strategy == kaizen::v1::STRATEGY_FINE_TUNE || strategy == kaizen::v1::STRATEGY_INCREMENTAL) {
    const std::vector<std::string> blocks = ListBlocks(backbone, head_path);
    const size_t k = static_cast<size_t>(std::max(0, trainable_blocks));
    all = k >= blocks.size();
    top.assign(blocks.end() - std::min(k, blocks.size()), blocks.end());
  }
  for (const auto& p : backbone.named_parameters(/*recurse=*/true)) {
    if (Within(p.name, head_path)) continue;
    const bool in_top = all || std::any_of(top.begin(), top.end(),
                                           [&](const std::string& b) { return Within(p.name, b); });
    if (in_top) names.push_back(p.name);
  }
  return names;
}

void ApplyRequiresGrad(const torch::jit::Module& backbone, const std::set<std::string>& trainable) {
  for (const auto& p : backbone.named_parameters(/*recurse=*/true)) {
    const bool train = trainable.count(p.name) > 0;
    torch::Tensor t = p.value;
    if (!train && t.grad().defined()) t.mutable_grad() = torch::Tensor();
    t.set_requires_grad(train);
  }
}

void SetTrainingMode(torch::jit::Module& backbone) {
  bool any_trainable = false;
  for (const torch::Tensor& p : backbone.parameters(/*recurse=*/true)) {
    any_trainable = any_trainable || p.requires_grad();
  }
  if (!any_trainable) {
    backbone.eval();
    return;
  }
  backbone.train();
  for (const auto& m : backbone.named_modules()) {
    if (m.name.empty()) continue;
    bool has_params = false, trainable = false;
    for (const torch::Tensor& p : m.value.parameters(/*recurse=*/true)) {
      has_params = true;
      trainable = trainable || p.requires_grad();
    }
    if (has_params && !trainable) {
      torch::jit::Module frozen = m.value;
      frozen.eval();
    }
  }
}

}  // namespace kaizen::training
