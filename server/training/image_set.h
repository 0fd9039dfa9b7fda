// A dataset converted once to the model's input: every record resized and
// channel-converted into one uint8 tensor [N, C, H, W] (4x smaller than
// floats; normalised per batch), plus the labels and the stratified split.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "kaizen/v1/model_service.pb.h"
#include "server/datasets/dataset_file.h"

namespace kaizen::training {

struct ImageSet {
  torch::Tensor images;  // uint8 [N, C, H, W]
  torch::Tensor labels;  // int64 [N]
  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
};

// Converts one row-major HWC image with `c` (1-4) channels to uint8
// [C, H, W] at `dst`: bilinear resize when the size differs, 1 -> 3 channels
// by repeating, 3 -> 1 by luminance (ITU-R 601), an alpha channel dropped.
// Training and serving both use it, so a served image is prepared exactly
// as the training images were.
void ConvertImage(const uint8_t* src, int64_t h, int64_t w, int64_t c, int64_t C, int64_t H,
                  int64_t W, uint8_t* dst);

// Converts every record of `data` to `input_shape` [C, H, W]: bilinear resize
// when the size differs, 1 -> 3 channels by repeating, 3 -> 1 by luminance
// (ITU-R 601), an alpha channel dropped. InvalidArgument for a record that
// does not fit in `pixels`, an unsupported channel count or a bad label.
absl::StatusOr<ImageSet> ConvertDataset(const datasets::DecodedDataset& data,
                                        const std::vector<int64_t>& input_shape);

// Rows `indices` of `set`.
ImageSet Subset(const ImageSet& set, const std::vector<int64_t>& indices);

// Splits 0..N-1 by class: about `fraction` of each class (at least one image
// of a class with two or more, never all of it) goes to the second list.
// Deterministic for a seed; both lists ascending.
std::pair<std::vector<int64_t>, std::vector<int64_t>> StratifiedSplit(
    const std::vector<int32_t>& labels, double fraction, uint64_t seed);

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

}  // namespace kaizen::training
