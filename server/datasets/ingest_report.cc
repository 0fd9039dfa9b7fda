#include "server/datasets/ingest_report.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/common/sha256.h"

namespace kaizen::datasets {
namespace {

// Index set whose hash and equality look at a record's shape and pixels, so
// that duplicates are found exactly (a hash match alone is not trusted).
struct RecordHash {
  const DecodedDataset* data;
  size_t operator()(uint32_t i) const {
    const DecodedDataset::Record& r = data->records[i];
    const auto bytes = static_cast<size_t>(int64_t{r.height} * r.width * r.channels);
    return absl::HashOf(
        r.height, r.width, r.channels,
        absl::string_view(reinterpret_cast<const char*>(data->pixels.data() + r.offset), bytes));
  }
};

struct RecordEq {
  const DecodedDataset* data;
  bool operator()(uint32_t a, uint32_t b) const {
    const DecodedDataset::Record& ra = data->records[a];
    const DecodedDataset::Record& rb = data->records[b];
    if (ra.height != rb.height || ra.width != rb.width || ra.channels != rb.channels) return false;
    const auto bytes = static_cast<size_t>(int64_t{ra.height} * ra.width * ra.channels);
    return std::memcmp(data->pixels.data() + ra.offset, data->pixels.data() + rb.offset, bytes) ==
           0;
  }
};

// Fills the report from `first_equal(i)`: the first earlier record equal to
// record i, or -1 when there is none (the first of its kind).
void ReportFound(size_t n, const std::function<int64_t(size_t)>& first_equal,
                 const std::function<std::string(size_t)>& name, int max_listed,
                 v1::DatasetReport* report) {
  int64_t count = 0;
  for (size_t i = 0; i < n; ++i) {
    const int64_t first = first_equal(i);
    if (first < 0) continue;
    ++count;
    if (report->duplicates_size() < max_listed) {
      v1::DatasetReport::Duplicate* dup = report->add_duplicates();
      dup->set_path(name(i));
      dup->set_duplicate_of(name(static_cast<size_t>(first)));
    }
  }
  report->set_duplicate_count(count);
  if (count > 0) {
    report->add_warnings(absl::StrCat(
        count, count == 1 ? " image is an exact duplicate" : " images are exact duplicates",
        " of another (kept; see the report's duplicates)"));
  }
}

}  // namespace

void ReportDuplicates(const DecodedDataset& data, const std::function<std::string(size_t)>& name,
                      int max_listed, v1::DatasetReport* report) {
  absl::flat_hash_set<uint32_t, RecordHash, RecordEq> seen(data.records.size(), RecordHash{&data},
                                                           RecordEq{&data});
  ReportFound(
      data.records.size(),
      [&](size_t i) -> int64_t {
        const auto [it, inserted] = seen.insert(static_cast<uint32_t>(i));
        return inserted ? -1 : int64_t{*it};
      },
      name, max_listed, report);
}

void ReportDuplicateDigests(absl::Span<const std::string> digests,
                            const std::function<std::string(size_t)>& name, int max_listed,
                            v1::DatasetReport* report) {
  absl::flat_hash_map<absl::string_view, size_t> first;
  first.reserve(digests.size());
  ReportFound(
      digests.size(),
      [&](size_t i) -> int64_t {
        const auto [it, inserted] = first.emplace(digests[i], i);
        return inserted ? -1 : static_cast<int64_t>(it->second);
      },
      name, max_listed, report);
}

std::string ImageDigest(int32_t height, int32_t width, int32_t channels,
                        absl::Span<const uint8_t> pixels) {
  common::Sha256 hasher;
  const int32_t shape[3] = {height, width, channels};
  hasher.Update(shape, sizeof(shape));
  hasher.Update(pixels.data(), pixels.size());
  return hasher.HexDigest();
}

void SummarizeDataset(const DecodedDataset& data, v1::Dataset* summary) {
  SummarizeDataset(data.class_names, data.records, summary);
}

void SummarizeClasses(const std::vector<std::string>& class_names,
                      const std::vector<int64_t>& counts, v1::Dataset* summary) {
  v1::DatasetReport* report = summary->mutable_report();
  int largest = -1;
  int smallest = -1;
  for (size_t label = 0; label < counts.size(); ++label) {
    v1::ClassCount* c = summary->add_classes();
    c->set_label(static_cast<int32_t>(label));
    c->set_class_name(class_names[label]);
    c->set_count(counts[label]);
    if (counts[label] == 0) {
      report->add_warnings(
          absl::StrCat("class '", class_names[label], "' (label ", label, ") has no examples"));
      continue;
    }
    if (largest < 0 || counts[label] > counts[largest]) largest = static_cast<int>(label);
    if (smallest < 0 || counts[label] < counts[smallest]) smallest = static_cast<int>(label);
  }
  if (smallest >= 0) {
    const double ratio = static_cast<double>(counts[largest]) / counts[smallest];
    report->set_imbalance_ratio(ratio);
    if (ratio > kImbalanceWarningRatio) {
      report->add_warnings(absl::StrFormat(
          "class imbalance: '%s' has %d examples but '%s' has only %d (ratio %.1f); consider "
          "collecting more of the small classes or weighting them",
          class_names[largest], counts[largest], class_names[smallest], counts[smallest], ratio));
    }
  }
}

void SummarizeDataset(const std::vector<std::string>& class_names,
                      absl::Span<const DecodedDataset::Record> records, v1::Dataset* summary) {
  summary->set_num_examples(static_cast<int64_t>(records.size()));
  std::vector<int64_t> counts(class_names.size(), 0);
  std::map<std::tuple<int32_t, int32_t, int32_t>, int64_t> sizes;  // (H, W, C)
  int32_t max_channels = 0;
  for (const DecodedDataset::Record& r : records) {
    ++counts[r.label];
    ++sizes[{r.height, r.width, r.channels}];
    max_channels = std::max(max_channels, r.channels);
  }
  SummarizeClasses(class_names, counts, summary);
  v1::DatasetReport* report = summary->mutable_report();

  // The input shape is the most common height x width (ties: the smaller),
  // with as many channels as the richest image, since grey converts to RGB
  // without loss but not the other way round.
  std::map<std::pair<int32_t, int32_t>, int64_t> hw_counts;
  for (const auto& [shape, n] : sizes) hw_counts[{std::get<0>(shape), std::get<1>(shape)}] += n;
  auto best = hw_counts.begin();
  for (auto it = hw_counts.begin(); it != hw_counts.end(); ++it) {
    if (it->second > best->second) best = it;
  }
  summary->add_input_shape(max_channels);
  summary->add_input_shape(best->first.first);
  summary->add_input_shape(best->first.second);
  if (sizes.size() > 1) {
    std::vector<std::pair<int64_t, std::tuple<int32_t, int32_t, int32_t>>> by_count;
    for (const auto& [shape, n] : sizes) by_count.push_back({-n, shape});
    std::sort(by_count.begin(), by_count.end());
    for (size_t i = 0; i < by_count.size() && i < kMaxListedSizes; ++i) {
      const auto& [h, w, c] = by_count[i].second;
      report->add_image_sizes(absl::StrCat(h, "x", w, "x", c));
    }
    report->add_warnings(absl::StrCat(
        "images come in ", sizes.size(), " different sizes (HxWxC); the most common is ",
        best->first.first, "x", best->first.second, " (", best->second, " of ", records.size(),
        " images); training resizes every image to the model's input"));
  }
}

}  // namespace kaizen::datasets
