#include "server/training/parameter_init.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cmath>

namespace kaizen::training {

void ReinitializeParameters(torch::jit::Module& module, uint64_t seed) {
  torch::NoGradGuard no_grad;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (const auto& m : module.named_modules()) {
    torch::jit::Module sub = m.value;
    const bool batch_norm = sub.hasattr("running_mean") && sub.attr("running_mean").isTensor();
    if (batch_norm) {
      for (const auto& b : sub.named_buffers(/*recurse=*/false)) {
        torch::Tensor t = b.value;
        if (b.name == "running_mean") t.zero_();
        if (b.name == "running_var") t.fill_(1);
        if (b.name == "num_batches_tracked") t.zero_();
      }
    }
    int64_t fan_in = 0;
    for (const auto& p : sub.named_parameters(/*recurse=*/false)) {
      if (p.value.dim() >= 2) fan_in = p.value.numel() / p.value.size(0);
    }
    for (const auto& p : sub.named_parameters(/*recurse=*/false)) {
      torch::Tensor t = p.value;
      const auto cpu = torch::TensorOptions().dtype(torch::kFloat);
      torch::Tensor fresh;
      if (t.dim() >= 3) {
        const double fan_out = static_cast<double>(t.numel() / t.size(1));
        fresh = torch::empty(t.sizes(), cpu).normal_(0.0, std::sqrt(2.0 / fan_out), gen);
      } else if (t.dim() == 2) {
        const double bound = 1.0 / std::sqrt(static_cast<double>(t.size(1)));
        fresh = torch::empty(t.sizes(), cpu).uniform_(-bound, bound, gen);
      } else if (batch_norm || fan_in == 0) {
        fresh = p.name == "weight" ? torch::ones(t.sizes(), cpu) : torch::zeros(t.sizes(), cpu);
      } else if (p.name == "bias" && sub.hasattr("weight") && sub.attr("weight").isTensor() &&
                 sub.attr("weight").toTensor().dim() == 2) {
        const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
        fresh = torch::empty(t.sizes(), cpu).uniform_(-bound, bound, gen);
      } else {
        fresh = torch::zeros(t.sizes(), cpu);
      }
      t.copy_(fresh);
    }
  }
}

}  // namespace kaizen::training
