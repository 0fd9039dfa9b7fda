// The operators an uploaded TorchScript model may contain. TorchScript can
// call any registered operator, and some of them read or write files
// (aten::from_file, aten::save), start threads (prim::fork) or reach other
// processes; a model is code, so only operators known to be pure tensor and
// control-flow operations are accepted. The list covers torchvision's
// classifiers (ResNet to ViT and Swin) and Kaizen's built-in architectures;
// operators can be added with --model_extra_operators.
#pragma once

#include <torch/script.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace kaizen::models {

// The built-in allow-list, sorted ("aten::add", "prim::If", ...).
absl::Span<const char* const> AllowedOperators();

// Walks every function of the module's compilation unit (every method of
// every class it defines, including code forward never reaches) and returns
// INVALID_ARGUMENT naming the first operator outside the allow-list plus
// `extra`, and the function that uses it.
absl::Status CheckOperators(const torch::jit::Module& module,
                            const std::vector<std::string>& extra);

}  // namespace kaizen::models
