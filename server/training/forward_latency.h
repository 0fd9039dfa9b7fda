// Measures what one input (an image, a text) costs two models side by side:
// the median time of a batch-1 forward pass of each, taken alternately so
// that a noisy, shared machine slows both alike (a timing means something
// here only as a ratio taken in one run). A DISTILL job reports its
// teacher's and its student's.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace kaizen::training {

struct LatencyComparison {
  double first_ms = 0;   // median milliseconds per forward pass of `first`
  double second_ms = 0;  // the same for `second`
  int rounds = 0;
};

// Runs each module on one zero image of its input shape [C, H, W], in eval
// mode and inference mode on `device`: `warmup` passes each, then `rounds`
// alternating pairs. The modules are put in eval mode and moved to `device`.
// InvalidArgument for a shape that is not [C, H, W] or rounds < 1; a LibTorch
// failure becomes InvalidArgument naming which model failed.
absl::StatusOr<LatencyComparison> CompareForwardLatency(torch::jit::Module first,
                                                        const std::vector<int64_t>& first_shape,
                                                        torch::jit::Module second,
                                                        const std::vector<int64_t>& second_shape,
                                                        const torch::Device& device,
                                                        int rounds = 30, int warmup = 3);

// The same with each model's own inputs (CPU tensors, moved to `device`),
// e.g. a text's input_ids and attention_mask as each model's tokenizer
// makes them. InvalidArgument for rounds < 1 or a LibTorch failure, naming
// which model failed.
absl::StatusOr<LatencyComparison> CompareForwardLatencyOnInputs(
    torch::jit::Module first, std::vector<torch::Tensor> first_inputs, torch::jit::Module second,
    std::vector<torch::Tensor> second_inputs, const torch::Device& device, int rounds = 30,
    int warmup = 3);

}  // namespace kaizen::training
