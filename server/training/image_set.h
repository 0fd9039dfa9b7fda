// A dataset converted once to the model's input: every record resized and
// channel-converted into one uint8 tensor [N, C, H, W] (4x smaller than
// floats; normalised per batch by imaging::Normalizer), plus the labels and
// the stratified split. Images convert with imaging::ConvertImage, as served
// images do.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "server/datasets/dataset_file.h"

namespace kaizen::training {

struct ImageSet {
  torch::Tensor images;  // uint8 [N, C, H, W]
  torch::Tensor labels;  // int64 [N]
  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
};

// Converts every record of `data` to `input_shape` [C, H, W]: bilinear resize
// when the size differs, 1 -> 3 channels by repeating, 3 -> 1 by luminance
// (ITU-R 601), an alpha channel dropped. InvalidArgument for a record that
// does not fit in `pixels`, an unsupported channel count or a bad label.
absl::StatusOr<ImageSet> ConvertDataset(const datasets::DecodedDataset& data,
                                        const std::vector<int64_t>& input_shape);
// The same for the `count` records from `begin` (in range), so that a pass
// over a large dataset holds one batch of converted images at a time.
absl::StatusOr<ImageSet> ConvertRecords(const datasets::DecodedDataset& data, int64_t begin,
                                        int64_t count, const std::vector<int64_t>& input_shape);

// Rows `indices` of `set`.
ImageSet Subset(const ImageSet& set, const std::vector<int64_t>& indices);

// Splits 0..N-1 by class: about `fraction` of each class (at least one image
// of a class with two or more, never all of it) goes to the second list.
// Deterministic for a seed; both lists ascending.
std::pair<std::vector<int64_t>, std::vector<int64_t>> StratifiedSplit(
    const std::vector<int32_t>& labels, double fraction, uint64_t seed);

}  // namespace kaizen::training
