#include "server/training/forward_latency.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/models/torch_errors.h"

namespace kaizen::training {
namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace

absl::StatusOr<LatencyComparison> CompareForwardLatency(
    torch::jit::Module first, const std::vector<int64_t>& first_shape, torch::jit::Module second,
    const std::vector<int64_t>& second_shape, const torch::Device& device, int rounds, int warmup) {
  if (first_shape.size() != 3 || second_shape.size() != 3) {
    return absl::InvalidArgumentError("latency: both models need a [C, H, W] input shape");
  }
  return CompareForwardLatencyOnInputs(
      std::move(first), {torch::zeros({1, first_shape[0], first_shape[1], first_shape[2]})},
      std::move(second), {torch::zeros({1, second_shape[0], second_shape[1], second_shape[2]})},
      device, rounds, warmup);
}

absl::StatusOr<LatencyComparison> CompareForwardLatencyOnInputs(
    torch::jit::Module first, std::vector<torch::Tensor> first_inputs, torch::jit::Module second,
    std::vector<torch::Tensor> second_inputs, const torch::Device& device, int rounds, int warmup) {
  if (rounds < 1) return absl::InvalidArgumentError("latency: rounds must be >= 1");
  const char* which = "the first model";
  try {
    first.eval();
    first.to(device);
    second.eval();
    second.to(device);
    c10::InferenceMode inference;
    const auto on_device = [&](const std::vector<torch::Tensor>& inputs) {
      std::vector<c10::IValue> out;
      for (const torch::Tensor& t : inputs) out.emplace_back(t.to(device));
      return out;
    };
    const std::vector<c10::IValue> x1 = on_device(first_inputs);
    const std::vector<c10::IValue> x2 = on_device(second_inputs);
    // One pass, timed; CUDA work is waited for so that the time is the
    // model's and not the launch's.
    auto timed = [&](torch::jit::Module& m, const std::vector<c10::IValue>& x) {
      const auto start = std::chrono::steady_clock::now();
      torch::Tensor out = m.forward(x).toTensor();
      if (device.is_cuda()) out.cpu();
      return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
          .count();
    };
    for (int i = 0; i < warmup; ++i) {
      which = "the first model";
      timed(first, x1);
      which = "the second model";
      timed(second, x2);
    }
    std::vector<double> a, b;
    for (int i = 0; i < rounds; ++i) {
      which = "the first model";
      a.push_back(timed(first, x1));
      which = "the second model";
      b.push_back(timed(second, x2));
    }
    LatencyComparison out;
    out.first_ms = Median(std::move(a));
    out.second_ms = Median(std::move(b));
    out.rounds = rounds;
    return out;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("latency: ", which, " failed: ", models::TorchErrorSummary(e)));
  }
}

}  // namespace kaizen::training
