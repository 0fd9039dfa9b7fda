// Turns uint8 image batches into a model's normalised float input, with the
// mean/std of the model's metadata. Shared by training and serving.
#pragma once

#include <torch/script.h>

#include <cstdint>

#include "kaizen/v1/model_service.pb.h"

namespace kaizen::imaging {

// Turns uint8 batches into the model's normalised float input on one device.
class Normalizer {
 public:
  // Mean/std per channel; one value applies to all channels; empty means
  // mean 0, std 1 (pixels scaled to [0, 1] only).
  Normalizer(const kaizen::v1::Normalization& normalization, int64_t channels,
             const torch::Device& device);

  // uint8 [N, C, H, W] -> float in [0, 1].
  static torch::Tensor ToUnit(const torch::Tensor& images);
  // float in [0, 1] -> (x - mean) / std.
  torch::Tensor Normalize(const torch::Tensor& unit_images) const;

 private:
  torch::Tensor mean_;  // [1, C, 1, 1]
  torch::Tensor std_;
};

}  // namespace kaizen::imaging
