#include "server/training/exemplar_memory.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>

namespace kaizen::training {

int64_t ExemplarsPerClass(int64_t per_class, int64_t max_total, int64_t num_classes) {
  int64_t n = per_class;
  if (num_classes > 0 && max_total > 0) n = std::min(n, max_total / num_classes);
  return std::max<int64_t>(n, 1);
}

std::vector<int64_t> HerdingOrder(const torch::Tensor& features, int64_t k) {
  torch::NoGradGuard no_grad;
  const torch::Tensor f =
      torch::nn::functional::normalize(features.to(torch::kCPU, torch::kDouble),
                                       torch::nn::functional::NormalizeFuncOptions().p(2).dim(1));
  const int64_t n = f.size(0);
  k = std::min(k, n);
  std::vector<int64_t> picked;
  if (k <= 0) return picked;
  const torch::Tensor mean = f.mean(0);
  torch::Tensor sum = torch::zeros_like(mean);
  std::vector<bool> used(n, false);
  for (int64_t t = 1; t <= k; ++t) {
    // Distance from the class mean of the mean with each candidate added.
    const torch::Tensor dist =
        (mean.unsqueeze(0) - (sum.unsqueeze(0) + f) / static_cast<double>(t)).norm(2, 1);
    const double* d = dist.data_ptr<double>();
    int64_t best = -1;
    double best_d = std::numeric_limits<double>::infinity();
    for (int64_t i = 0; i < n; ++i) {
      if (!used[i] && d[i] < best_d) {
        best = i;
        best_d = d[i];
      }
    }
    // Non-finite features (NaN distances everywhere): the first unused
    // image, so that the order stays total.
    if (best < 0) best = std::find(used.begin(), used.end(), false) - used.begin();
    used[best] = true;
    picked.push_back(best);
    sum += f[best];
  }
  return picked;
}

std::vector<int64_t> RandomOrder(int64_t n, int64_t k, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const torch::Tensor perm = torch::randperm(n, gen, torch::TensorOptions().dtype(torch::kLong));
  const int64_t* p = perm.data_ptr<int64_t>();
  return std::vector<int64_t>(p, p + std::min(std::max<int64_t>(k, 0), n));
}

datasets::DecodedDataset ShrinkMemory(const datasets::DecodedDataset& memory,
                                      const std::vector<std::string>& classes, int64_t per_class) {
  datasets::DecodedDataset out;
  out.class_names = classes;
  AppendByName(memory, per_class, &out);
  return out;
}

void AppendByName(const datasets::DecodedDataset& from, int64_t per_class,
                  datasets::DecodedDataset* to) {
  std::vector<int64_t> taken = MemoryClassCounts(*to);
  std::vector<int32_t> label_of(from.class_names.size(), -1);
  for (size_t c = 0; c < from.class_names.size(); ++c) {
    const auto it = std::find(to->class_names.begin(), to->class_names.end(), from.class_names[c]);
    if (it != to->class_names.end())
      label_of[c] = static_cast<int32_t>(it - to->class_names.begin());
  }
  for (const auto& r : from.records) {
    if (r.label < 0 || static_cast<size_t>(r.label) >= label_of.size()) continue;
    const int32_t label = label_of[r.label];
    if (label < 0 || taken[label] >= per_class) continue;
    ++taken[label];
    datasets::DecodedDataset::Record copy = r;
    copy.label = label;
    copy.offset = static_cast<int64_t>(to->pixels.size());
    const int64_t bytes = static_cast<int64_t>(r.height) * r.width * r.channels;
    to->pixels.insert(to->pixels.end(), from.pixels.begin() + r.offset,
                      from.pixels.begin() + r.offset + bytes);
    to->records.push_back(copy);
  }
}

void AppendExemplars(const torch::Tensor& images, int32_t label, datasets::DecodedDataset* memory) {
  // NCHW -> NHWC, the dataset file's layout.
  const torch::Tensor hwc =
      images.to(torch::kCPU, torch::kUInt8).permute({0, 2, 3, 1}).contiguous();
  const int64_t n = hwc.size(0);
  const int64_t bytes = n > 0 ? hwc.numel() / n : 0;
  const uint8_t* p = hwc.data_ptr<uint8_t>();
  for (int64_t i = 0; i < n; ++i) {
    datasets::DecodedDataset::Record r;
    r.label = label;
    r.height = static_cast<int32_t>(hwc.size(1));
    r.width = static_cast<int32_t>(hwc.size(2));
    r.channels = static_cast<int32_t>(hwc.size(3));
    r.offset = static_cast<int64_t>(memory->pixels.size());
    memory->pixels.insert(memory->pixels.end(), p + i * bytes, p + (i + 1) * bytes);
    memory->records.push_back(r);
  }
}

std::vector<int64_t> MemoryClassCounts(const datasets::DecodedDataset& memory) {
  std::vector<int64_t> counts(memory.class_names.size(), 0);
  for (const auto& r : memory.records) {
    if (r.label >= 0 && static_cast<size_t>(r.label) < counts.size()) ++counts[r.label];
  }
  return counts;
}

}  // namespace kaizen::training
