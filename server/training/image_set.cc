#include "server/training/image_set.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <random>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "server/imaging/image_convert.h"

namespace kaizen::training {

absl::StatusOr<ImageSet> ConvertDataset(const datasets::DecodedDataset& data,
                                        const std::vector<int64_t>& input_shape) {
  return ConvertRecords(data, 0, static_cast<int64_t>(data.records.size()), input_shape);
}

absl::StatusOr<ImageSet> ConvertRecords(const datasets::DecodedDataset& data, int64_t begin,
                                        int64_t count, const std::vector<int64_t>& input_shape) {
  if (input_shape.size() != 3 || input_shape[0] < 1 || input_shape[1] < 1 || input_shape[2] < 1) {
    return absl::InvalidArgumentError("the model's input_shape must be [C, H, W]");
  }
  const int64_t C = input_shape[0], H = input_shape[1], W = input_shape[2];
  if (C != 1 && C != 3) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the model takes %d input channels; only 1 (grayscale) or 3 (RGB) are supported", C));
  }
  const auto records = static_cast<int64_t>(data.records.size());
  if (begin < 0 || count < 0 || begin > records || count > records - begin) {
    return absl::InvalidArgumentError(absl::StrFormat("records %d..%d are out of the dataset's %d",
                                                      begin, begin + count, records));
  }
  const int64_t n = count;
  const int64_t num_classes = static_cast<int64_t>(data.class_names.size());
  ImageSet set;
  set.images = torch::empty({n, C, H, W}, torch::kUInt8);
  set.labels = torch::empty({n}, torch::kLong);
  uint8_t* out = set.images.data_ptr<uint8_t>();
  int64_t* labels = set.labels.data_ptr<int64_t>();
  const int64_t plane = H * W;
  for (int64_t k = 0; k < n; ++k) {
    const int64_t i = begin + k;
    const datasets::DecodedDataset::Record& r = data.records[i];
    const int64_t bytes = int64_t{r.height} * r.width * r.channels;
    if (r.height < 1 || r.width < 1 || r.offset < 0 ||
        r.offset + bytes > static_cast<int64_t>(data.pixels.size())) {
      return absl::InvalidArgumentError(
          absl::StrFormat("record %d (%dx%dx%d at offset %d) does not fit in the dataset's pixels",
                          i, r.height, r.width, r.channels, r.offset));
    }
    if (r.channels < 1 || r.channels > 4) {
      return absl::InvalidArgumentError(
          absl::StrFormat("record %d has %d channels; expected 1 to 4", i, r.channels));
    }
    if (r.label < 0 || r.label >= num_classes) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "record %d has label %d; the dataset has %d classes", i, r.label, num_classes));
    }
    labels[k] = r.label;
    imaging::ConvertImage(data.pixels.data() + r.offset, r.height, r.width, r.channels, C, H, W,
                          out + k * C * plane);
  }
  return set;
}

ImageSet Subset(const ImageSet& set, const std::vector<int64_t>& indices) {
  const torch::Tensor idx = torch::tensor(indices, torch::kLong).to(set.labels.device());
  return ImageSet{set.images.index_select(0, idx.to(set.images.device())),
                  set.labels.index_select(0, idx)};
}

std::pair<std::vector<int64_t>, std::vector<int64_t>> StratifiedSplit(
    const std::vector<int32_t>& labels, double fraction, uint64_t seed) {
  std::map<int32_t, std::vector<int64_t>> by_class;
  for (int64_t i = 0; i < static_cast<int64_t>(labels.size()); ++i) {
    by_class[labels[i]].push_back(i);
  }
  std::mt19937_64 rng(seed ^ 0x5eed5a1177ULL);
  std::vector<int64_t> train, held_out;
  for (auto& [label, idx] : by_class) {
    // Fisher-Yates with our own draw, so the order is the same everywhere.
    for (int64_t i = static_cast<int64_t>(idx.size()) - 1; i > 0; --i) {
      std::swap(idx[i], idx[rng() % static_cast<uint64_t>(i + 1)]);
    }
    const int64_t n = static_cast<int64_t>(idx.size());
    int64_t k = static_cast<int64_t>(std::llround(fraction * static_cast<double>(n)));
    if (fraction > 0 && n >= 2) k = std::clamp<int64_t>(k, 1, n - 1);
    if (n < 2) k = 0;
    held_out.insert(held_out.end(), idx.begin(), idx.begin() + k);
    train.insert(train.end(), idx.begin() + k, idx.end());
  }
  std::sort(train.begin(), train.end());
  std::sort(held_out.begin(), held_out.end());
  return {std::move(train), std::move(held_out)};
}

}  // namespace kaizen::training
