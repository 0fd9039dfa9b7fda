#include "server/training/batchnorm_recalibration.h"

#include <torch/torch.h>

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"

namespace kaizen::training {
namespace {

// A momentum below this cannot be told from none (the running statistics
// would not move) and the batch statistics cannot be read back.
constexpr double kMinMomentum = 1e-6;
// The probe fills the running mean with this multiple of (1 + |m * mean|),
// so that the term (1 - m) * fill dominates the update and m is read to
// float precision whatever the scale of the layer's inputs.
constexpr double kProbeScale = 1e4;

bool IsBatchNorm(const torch::jit::Module& m) {
  return m.hasattr("running_mean") && m.hasattr("running_var") &&
         m.attr("running_mean").isTensor() && m.attr("running_var").isTensor();
}

// Sets one module's mode without touching its children (Module::train
// recurses).
void SetOwnMode(torch::jit::Module m, bool training) {
  if (m.hasattr("training")) m.setattr("training", training);
}

struct Layer {
  torch::Tensor mean;             // the module's running_mean buffer, updated in place
  torch::Tensor var;              // running_var
  torch::Tensor batches_tracked;  // num_batches_tracked; undefined when absent
  torch::Tensor saved_batches_tracked;
  torch::Tensor saved_mean;  // restored when the layer cannot be recalibrated
  torch::Tensor saved_var;
  double momentum = 0;
  // Example-weighted sums of the batch means and of var + mean^2 (float64).
  torch::Tensor sum_mean;
  torch::Tensor sum_second;
  double weight = 0;
};

// Before a forward pass: running statistics that the pass turns into
// (1 - m) * fill + m * (batch statistic); num_batches_tracked at 0 so that a
// cumulative average (momentum None) weighs the pass fully.
void Fill(std::vector<Layer>& layers, const std::vector<torch::Tensor>& fills) {
  for (size_t i = 0; i < layers.size(); ++i) {
    Layer& l = layers[i];
    if (fills.empty()) {
      l.mean.zero_();
      l.var.zero_();
    } else {
      l.mean.copy_(fills[i]);
      l.var.copy_(fills[i]);
    }
    if (l.batches_tracked.defined()) l.batches_tracked.zero_();
  }
}

void Accumulate(Layer& l, const torch::Tensor& scaled_mean, const torch::Tensor& scaled_var,
                int64_t examples) {
  const torch::Tensor mean = scaled_mean / l.momentum;
  const torch::Tensor var = scaled_var / l.momentum;
  const double w = static_cast<double>(examples);
  l.sum_mean = l.sum_mean + w * mean;
  l.sum_second = l.sum_second + w * (var + mean * mean);
  l.weight += w;
}

// A group's sums of every layer over the ranks, in one collective; a layer
// stays usable where it is on every rank (the others' sums of it are left
// out).
absl::Status SumOverRanks(distributed::Group& group, std::vector<Layer>& layers,
                          std::vector<bool>& usable) {
  // Per layer: its weight, whether it is usable here, its sums.
  std::vector<torch::Tensor> parts;
  for (size_t i = 0; i < layers.size(); ++i) {
    const Layer& l = layers[i];
    parts.push_back(torch::tensor({l.weight, usable[i] ? 1.0 : 0.0}, torch::kDouble));
    parts.push_back(l.sum_mean.flatten());
    parts.push_back(l.sum_second.flatten());
  }
  torch::Tensor flat = torch::cat(parts);
  RETURN_IF_ERROR(group.Sum({flat}));
  int64_t at = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    Layer& l = layers[i];
    l.weight = flat[at].item<double>();
    usable[i] = flat[at + 1].item<double>() == static_cast<double>(group.world_size());
    at += 2;
    const int64_t n = l.sum_mean.numel();
    l.sum_mean = flat.narrow(0, at, n).view(l.sum_mean.sizes()).clone();
    l.sum_second = flat.narrow(0, at + n, n).view(l.sum_second.sizes()).clone();
    at += 2 * n;
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<std::string> TrainingBatchNormPaths(const torch::jit::Module& module) {
  std::vector<std::string> paths;
  for (const auto& m : module.named_modules()) {
    if (IsBatchNorm(m.value) && m.value.is_training()) paths.push_back(m.name);
  }
  return paths;
}

absl::StatusOr<int> RecalibrateBatchNorm(torch::jit::Module& module,
                                         const std::vector<std::string>& paths, int64_t num_batches,
                                         const std::function<int64_t(int64_t)>& run_batch,
                                         distributed::Group* group) {
  if (paths.empty() || (num_batches < 1 && group == nullptr)) return 0;
  std::vector<std::pair<std::string, torch::jit::Module>> by_path;
  for (const auto& m : module.named_modules()) by_path.emplace_back(m.name, m.value);
  std::vector<Layer> layers;
  std::vector<torch::jit::Module> bn_modules;
  for (const std::string& path : paths) {
    const torch::jit::Module* found = nullptr;
    for (const auto& [name, m] : by_path) {
      if (name == path) found = &m;
    }
    if (found == nullptr || !IsBatchNorm(*found)) {
      return absl::NotFoundError(absl::StrCat("the model has no BatchNorm layer '", path, "'"));
    }
    Layer l;
    l.mean = found->attr("running_mean").toTensor();
    l.var = found->attr("running_var").toTensor();
    l.saved_mean = l.mean.clone();
    l.saved_var = l.var.clone();
    if (found->hasattr("num_batches_tracked") && found->attr("num_batches_tracked").isTensor()) {
      l.batches_tracked = found->attr("num_batches_tracked").toTensor();
      l.saved_batches_tracked = l.batches_tracked.clone();
    }
    layers.push_back(std::move(l));
    bn_modules.push_back(*found);
  }

  torch::NoGradGuard no_grad;
  // Only the chosen layers in training mode: their statistics follow the
  // batch, and nothing else (dropout) draws random numbers or changes.
  std::vector<std::pair<torch::jit::Module, bool>> modes;
  for (const auto& [name, m] : by_path) modes.emplace_back(m, m.is_training());
  for (auto& [m, training] : modes) SetOwnMode(m, false);
  for (torch::jit::Module& m : bn_modules) SetOwnMode(m, true);

  // A rank of a group without a batch adds nothing and blocks no layer.
  std::vector<bool> usable(layers.size(), num_batches < 1);
  for (Layer& l : layers) {
    l.sum_mean = torch::zeros(l.mean.sizes(), l.mean.options().dtype(torch::kDouble));
    l.sum_second = torch::zeros(l.mean.sizes(), l.mean.options().dtype(torch::kDouble));
  }
  const auto run = [&] {
    if (num_batches < 1) return;
    // Batch 0 twice: from zero the buffers become m * (batch statistics);
    // from a large fill F they become (1 - m) * F + m * (batch statistics),
    // which gives each layer's momentum m.
    Fill(layers, {});
    const int64_t first = run_batch(0);
    std::vector<torch::Tensor> scaled_mean, scaled_var, fills;
    for (Layer& l : layers) {
      scaled_mean.push_back(l.mean.to(torch::kDouble));
      scaled_var.push_back(l.var.to(torch::kDouble));
      fills.push_back((kProbeScale * (1 + scaled_mean.back().abs())).to(l.mean.dtype()));
    }
    Fill(layers, fills);
    run_batch(0);
    for (size_t i = 0; i < layers.size(); ++i) {
      Layer& l = layers[i];
      const torch::Tensor fill = fills[i].to(torch::kDouble);
      const double keep =
          ((l.mean.to(torch::kDouble) - scaled_mean[i]) / fill).mean().item<double>();
      l.momentum = 1.0 - keep;
      usable[i] = l.momentum >= kMinMomentum && l.momentum <= 1.0 + kMinMomentum;
      if (usable[i]) Accumulate(l, scaled_mean[i], scaled_var[i], first);
    }
    for (int64_t b = 1; b < num_batches; ++b) {
      Fill(layers, {});
      const int64_t examples = run_batch(b);
      for (size_t i = 0; i < layers.size(); ++i) {
        if (usable[i]) {
          Accumulate(layers[i], layers[i].mean.to(torch::kDouble), layers[i].var.to(torch::kDouble),
                     examples);
        }
      }
    }
  };
  // Every layer and mode as before when a batch fails (here or, in a
  // group, on another rank).
  const auto restore = [&] {
    for (Layer& l : layers) {
      l.mean.copy_(l.saved_mean);
      l.var.copy_(l.saved_var);
      if (l.batches_tracked.defined()) l.batches_tracked.copy_(l.saved_batches_tracked);
    }
    for (auto& [m, training] : modes) SetOwnMode(m, training);
  };
  absl::Status summed = absl::OkStatus();
  try {
    if (group == nullptr) {
      run();
    } else {
      // Every rank leaves together when one's batches fail.
      summed = distributed::RunOnAllRanks(*group, run);
      if (summed.ok()) summed = SumOverRanks(*group, layers, usable);
    }
  } catch (...) {
    restore();
    throw;
  }
  if (!summed.ok()) {
    restore();
    return summed;
  }

  int recalibrated = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    Layer& l = layers[i];
    if (usable[i] && l.weight > 0) {
      const torch::Tensor mean = l.sum_mean / l.weight;
      l.mean.copy_(mean);
      l.var.copy_((l.sum_second / l.weight - mean * mean).clamp_min(0));
      ++recalibrated;
    } else {
      l.mean.copy_(l.saved_mean);
      l.var.copy_(l.saved_var);
    }
    if (l.batches_tracked.defined()) l.batches_tracked.copy_(l.saved_batches_tracked);
  }
  for (auto& [m, training] : modes) SetOwnMode(m, training);
  return recalibrated;
}

}  // namespace kaizen::training
