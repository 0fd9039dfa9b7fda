#include "server/training/augmenter.h"

#include <torch/torch.h>

#include <cmath>

namespace kaizen::training {

Augmenter::Augmenter(const kaizen::v1::Augmentation& options) : options_(options) {
  active_ = options.enabled() &&
            (options.random_crop_padding() > 0 || options.horizontal_flip() ||
             options.rotation_degrees() > 0 || options.brightness() > 0 || options.contrast() > 0);
}

torch::Tensor Augmenter::Apply(const torch::Tensor& unit_images, at::Generator& generator) const {
  if (!active_) return unit_images;
  const int64_t n = unit_images.size(0);
  const double h = static_cast<double>(unit_images.size(2));
  const double w = static_cast<double>(unit_images.size(3));
  const auto cpu = torch::TensorOptions().dtype(torch::kFloat);
  // Uniform draws in [-1, 1).
  auto symmetric = [&](int64_t count) {
    return torch::rand({count}, generator, cpu).mul_(2.0).sub_(1.0);
  };
  torch::Tensor x = unit_images;

  const int pad = options_.random_crop_padding();
  const bool flip = options_.horizontal_flip();
  const double max_degrees = options_.rotation_degrees();
  if (pad > 0 || flip || max_degrees > 0) {
    // One affine map per image (output -> input coordinates, normalised, with
    // align_corners=false): integer shifts and flips land exactly on pixels,
    // so crop and flip stay lossless; outside pixels read as zero, which is
    // what zero padding before a crop gives.
    torch::Tensor angle =
        max_degrees > 0 ? symmetric(n).mul_(max_degrees * M_PI / 180.0) : torch::zeros({n}, cpu);
    torch::Tensor sign = flip ? torch::where(torch::rand({n}, generator, cpu) < 0.5,
                                             torch::full({n}, -1.0f, cpu), torch::ones({n}, cpu))
                              : torch::ones({n}, cpu);
    torch::Tensor shift_x = torch::zeros({n}, cpu), shift_y = torch::zeros({n}, cpu);
    if (pad > 0) {
      shift_x = torch::randint(-pad, pad + 1, {n}, generator, cpu).mul_(2.0 / w);
      shift_y = torch::randint(-pad, pad + 1, {n}, generator, cpu).mul_(2.0 / h);
    }
    const torch::Tensor c = angle.cos(), s = angle.sin();
    // [[cos * sign, -sin * h/w, tx], [sin * sign * w/h, cos, ty]]
    torch::Tensor theta = torch::stack({torch::stack({c * sign, -s * (h / w), shift_x}, 1),
                                        torch::stack({s * sign * (w / h), c, shift_y}, 1)},
                                       1);
    theta = theta.to(x.device(), x.scalar_type());
    const torch::Tensor grid = torch::nn::functional::affine_grid(
        theta, {x.size(0), x.size(1), x.size(2), x.size(3)}, /*align_corners=*/false);
    namespace F = torch::nn::functional;
    x = F::grid_sample(x, grid,
                       F::GridSampleFuncOptions()
                           .mode(torch::kBilinear)
                           .padding_mode(torch::kZeros)
                           .align_corners(false));
  }
  if (options_.brightness() > 0) {
    const torch::Tensor factor = symmetric(n).mul_(options_.brightness()).add_(1.0);
    x = x * factor.to(x.device(), x.scalar_type()).view({n, 1, 1, 1});
  }
  if (options_.contrast() > 0) {
    const torch::Tensor factor = symmetric(n).mul_(options_.contrast()).add_(1.0);
    const torch::Tensor mean = x.mean({1, 2, 3}, /*keepdim=*/true);
    x = (x - mean) * factor.to(x.device(), x.scalar_type()).view({n, 1, 1, 1}) + mean;
  }
  return x.clamp(0.0, 1.0);
}

}  // namespace kaizen::training
