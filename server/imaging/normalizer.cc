#include "server/imaging/normalizer.h"

#include <torch/torch.h>

#include <algorithm>
#include <vector>

namespace kaizen::imaging {

Normalizer::Normalizer(const kaizen::v1::Normalization& normalization, int64_t channels,
                       const torch::Device& device) {
  std::vector<float> mean(channels, 0.0f), std(channels, 1.0f);
  for (int64_t c = 0; c < channels; ++c) {
    if (normalization.mean_size() > 0) {
      mean[c] = normalization.mean(
          normalization.mean_size() == 1 ? 0 : std::min<int>(c, normalization.mean_size() - 1));
    }
    if (normalization.std_size() > 0) {
      const float s = normalization.std(
          normalization.std_size() == 1 ? 0 : std::min<int>(c, normalization.std_size() - 1));
      std[c] = s > 0 ? s : 1.0f;
    }
  }
  mean_ = torch::tensor(mean).view({1, channels, 1, 1}).to(device);
  std_ = torch::tensor(std).view({1, channels, 1, 1}).to(device);
}

torch::Tensor Normalizer::ToUnit(const torch::Tensor& images) {
  return images.to(torch::kFloat).div_(255.0);
}

torch::Tensor Normalizer::Normalize(const torch::Tensor& unit_images) const {
  return (unit_images - mean_) / std_;
}

}  // namespace kaizen::imaging
