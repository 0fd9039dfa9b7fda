// The rehearsal memory of an INCREMENTAL job: a bounded set of exemplar
// images per class, stored beside every model version (a dataset file,
// written atomically) so that the next increment replays them. Images are
// kept at the model's input shape; selection is iCaRL herding on the features
// the head takes, or a seeded random sample.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kaizen/v1/finetune_service.pb.h"
#include "server/datasets/dataset_file.h"

namespace kaizen::training {

// Exemplars per class when the request leaves it 0, and the bound on the
// whole memory.
inline constexpr int32_t kDefaultExemplarsPerClass = 50;
inline constexpr int32_t kDefaultMaxExemplars = 2000;
// Upper bounds on IncrementalOptions.exemplars_per_class and max_exemplars.
inline constexpr int32_t kMaxExemplarsPerClass = 10000;
inline constexpr int32_t kMaxExemplarsInAll = 100000;

// min(per_class, max_total / num_classes), at least 1.
int64_t ExemplarsPerClass(int64_t per_class, int64_t max_total, int64_t num_classes);

// iCaRL herding (Rebuffi et al., 2017) over features [n, d] of one class,
// L2-normalised per row: picks up to k distinct rows in turn, each the one
// that brings the mean of those picked closest to the class mean. The order
// is a priority: a smaller memory keeps a prefix. Deterministic.
std::vector<int64_t> HerdingOrder(const torch::Tensor& features, int64_t k);

// Up to k distinct rows of 0..n-1, a seeded random sample in random order.
std::vector<int64_t> RandomOrder(int64_t n, int64_t k, uint64_t seed);

// A memory whose classes are `classes`: for each class, the first
// `per_class` exemplars `memory` holds of that name (in its order); classes
// `memory` lacks get none. Labels are indices into `classes`.
datasets::DecodedDataset ShrinkMemory(const datasets::DecodedDataset& memory,
                                      const std::vector<std::string>& classes, int64_t per_class);

// Appends to `to` the records of `from` whose class name is one of
// `to->class_names` (relabelled by name), at most `per_class` per class
// counting those `to` already holds.
void AppendByName(const datasets::DecodedDataset& from, int64_t per_class,
                  datasets::DecodedDataset* to);

// Appends images (uint8 [N, C, H, W]) with `label` to `memory`.
void AppendExemplars(const torch::Tensor& images, int32_t label, datasets::DecodedDataset* memory);

// Examples per class of `memory` (index = label).
std::vector<int64_t> MemoryClassCounts(const datasets::DecodedDataset& memory);

}  // namespace kaizen::training
