// The shape rule both inference protocols share: inputs of a model that
// takes [C, H, W] arrive as [C, H, W] (one input) or [N, C, H, W] (N
// inputs), and messages print shapes as "[N, C, H, W]". Torch-free, so that
// the OIP byte-level decoding (oip_tensor.h) and the serving engine's tensor
// checks (serving/preprocess.h) use the one rule.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/types/span.h"

namespace kaizen::common {

// The number of inputs `shape` holds for a model of input shape `chw`: 1 for
// `chw` itself, N for [N, chw...] (any N, also 0 or negative: the caller
// bounds it), nullopt for any other shape.
std::optional<int64_t> InputsInShape(absl::Span<const int64_t> shape,
                                     absl::Span<const int64_t> chw);

// "[2, 1, 28, 28]".
std::string ShapeText(absl::Span<const int64_t> shape);

}  // namespace kaizen::common
