// Random data augmentation applied per batch on the batch's device: random
// crop after zero padding, horizontal flip and small rotation (one affine
// grid_sample per batch), then brightness and contrast jitter.
#pragma once

#include <torch/script.h>

#include "kaizen/v1/finetune_service.pb.h"

namespace kaizen::training {

class Augmenter {
 public:
  explicit Augmenter(const kaizen::v1::Augmentation& options);

  // False when `options` is disabled or changes nothing.
  bool active() const { return active_; }

  // float [N, C, H, W] in [0, 1] -> the same shape, augmented. Random draws
  // come from `generator` (a CPU generator) so that they are reproducible on
  // any device.
  torch::Tensor Apply(const torch::Tensor& unit_images, at::Generator& generator) const;

 private:
  kaizen::v1::Augmentation options_;
  bool active_;
};

}  // namespace kaizen::training
