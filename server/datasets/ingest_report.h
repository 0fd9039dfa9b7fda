// The part of a dataset's summary and report computed from the decoded data,
// the same for every upload format: class counts and imbalance, the input
// shape, the image sizes, and exact duplicates.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "kaizen/v1/dataset_service.pb.h"
#include "server/datasets/dataset_file.h"

namespace kaizen::datasets {

// Class counts above this max/min ratio get an imbalance warning.
inline constexpr double kImbalanceWarningRatio = 1.5;
// Distinct image sizes listed in the report.
inline constexpr int kMaxListedSizes = 20;

// Finds records with the same shape and pixels (compared exactly, not by hash
// alone): sets report->duplicate_count, lists the first `max_listed` as
// {name(i), name(first)} and adds a warning when there are any.
void ReportDuplicates(const DecodedDataset& data, const std::function<std::string(size_t)>& name,
                      int max_listed, v1::DatasetReport* report);

// The same for records whose pixels are no longer in memory: `digests[i]` is
// ImageDigest() of record i, and equal digests count as equal images.
void ReportDuplicateDigests(absl::Span<const std::string> digests,
                            const std::function<std::string(size_t)>& name, int max_listed,
                            v1::DatasetReport* report);

// SHA-256 (hex) of a decoded image's shape and pixels.
std::string ImageDigest(int32_t height, int32_t width, int32_t channels,
                        absl::Span<const uint8_t> pixels);

// Fills classes (ordered by label) from the count of each label, and the
// report's imbalance ratio and warnings (empty classes, imbalance).
void SummarizeClasses(const std::vector<std::string>& class_names,
                      const std::vector<int64_t>& counts, v1::Dataset* summary);

// Fills num_examples, classes (ordered by label), input_shape [C, H, W] (the
// most common height x width, ties to the smaller, with the most channels
// any image has) and the report's imbalance ratio, image sizes and warnings
// (empty classes, imbalance, mixed sizes). `data` must hold at least one
// record.
void SummarizeDataset(const DecodedDataset& data, v1::Dataset* summary);
// The same from the records' labels and shapes alone (their offsets and the
// pixels are not read).
void SummarizeDataset(const std::vector<std::string>& class_names,
                      absl::Span<const DecodedDataset::Record> records, v1::Dataset* summary);

}  // namespace kaizen::datasets
