// Re-initialises every parameter of an arbitrary TorchScript model, for
// SCRATCH training of an uploaded architecture (built-ins are rebuilt fresh).
#pragma once

#include <torch/script.h>

#include <cstdint>

namespace kaizen::training {

// Kaiming-normal (fan_out, ReLU) convolution weights with zero biases,
// BatchNorm-like modules (those with a running_mean buffer) to weight 1,
// bias 0 and fresh running statistics, Linear weights and biases to
// PyTorch's default uniform(+-1/sqrt(fan_in)), other 1-D weights to 1.
// Seeded; works on any device.
void ReinitializeParameters(torch::jit::Module& module, uint64_t seed);

}  // namespace kaizen::training
