// Turns Predict inputs into the float batch a model expects, exactly as the
// trainer prepared its training images: decode, convert channels, bilinear
// resize to the model's input size, scale to [0, 1], normalise with the
// model's mean/std.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kaizen/v1/common.pb.h"
#include "kaizen/v1/model_service.pb.h"

namespace kaizen::serving {

// A JPEG or PNG of any size -> float [C, H, W] normalised for `model`.
// InvalidArgument for undecodable bytes, FailedPrecondition for a format
// other than JPEG/PNG, ResourceExhausted over `max_pixels`; `what` (e.g.
// "inputs[3]") starts every message.
absl::StatusOr<torch::Tensor> PreprocessImage(absl::string_view bytes,
                                              const kaizen::v1::Model& model, int64_t max_pixels,
                                              absl::string_view what);

// Checks that `values` holds inputs of `model`'s shape [C, H, W]: `shape` is
// [C, H, W] (one input) or [N, C, H, W] (N >= 1 inputs), `count` equals its
// product and every value is finite. Returns a float [N, C, H, W] copy.
// InvalidArgument naming `what`, the shape given and the shape expected.
absl::StatusOr<torch::Tensor> BatchFromFloats(const float* values, int64_t count,
                                              const std::vector<int64_t>& shape,
                                              const kaizen::v1::Model& model,
                                              absl::string_view what);

// The same for a FloatTensor message.
absl::StatusOr<torch::Tensor> BatchFromTensor(const kaizen::v1::FloatTensor& tensor,
                                              const kaizen::v1::Model& model,
                                              absl::string_view what);

}  // namespace kaizen::serving
