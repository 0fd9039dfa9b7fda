// Architectures built into the server: small image classifiers created in C++
// as ordinary TorchScript modules (no Python), so that the trainer can fine-tune,
// save and reload them exactly like an uploaded TorchScript file.
//
// Module names follow torchvision (stem, layer1..3, fc; features.block1..) so
// that freezing "the top N blocks" and replacing the head by re-registering
// fc.weight / fc.bias work the same on built-in and uploaded ResNets.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kaizen/v1/model_service.pb.h"

namespace kaizen::models {

struct BuiltinOptions {
  // Channels of one input image (1 for grayscale, 3 for RGB).
  int64_t in_channels = 1;
  // Height and width of the (square) input; 8..1024. Above 64 the stem
  // downsamples early so that 224x224 stays cheap on a CPU.
  int64_t input_size = 28;
  // Width of the classification head.
  int64_t num_classes = 10;
  // Seeds the initial weights; the same seed gives the same weights. The
  // global torch RNG is neither used nor changed.
  uint64_t seed = 0;
};

// {"resnet-small", "cnn-small"}.
std::vector<std::string> BuiltinModelNames();

bool IsBuiltinModel(absl::string_view name);

// Metadata of a built-in architecture for `options`, without building it:
// source BUILTIN, version 1, architecture = name, input_shape {C, S, S},
// normalization 0.5/0.5 per channel, head "fc" (LINEAR), parameter_count.
// The caller sets name and timestamps.
absl::StatusOr<kaizen::v1::Model> DescribeBuiltinModel(absl::string_view name,
                                                       const BuiltinOptions& options = {});

// A freshly initialised module in training mode whose parameters all require
// grad. Kaiming-normal convolutions, BatchNorm weight 1 / bias 0, Linear with
// PyTorch's default init. The module has forward(x) -> logits [N, classes] and
// forward_features(x) -> pooled features [N, head in_features].
absl::StatusOr<torch::jit::Module> CreateBuiltinModel(absl::string_view name,
                                                      const BuiltinOptions& options);

}  // namespace kaizen::models
