#include "server/text/sequences.h"

#include <algorithm>
#include <numeric>
#include <random>
#include <string_view>

#include "absl/strings/str_cat.h"

namespace kaizen::text {

absl::Status ValidateSequenceOptions(const SequenceOptions& options) {
  const int32_t specials = (options.first_id >= 0 ? 1 : 0) + (options.last_id >= 0 ? 1 : 0);
  if (options.max_length < specials + 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_length is ", options.max_length, "; it must hold the ", specials,
                     " special tokens and at least one of the text's"));
  }
  if (options.pad_id < 0) {
    return absl::InvalidArgumentError(absl::StrCat("pad_id is ", options.pad_id));
  }
  return absl::OkStatus();
}

std::string_view CutText(std::string_view text, int64_t max_bytes, bool keep_end) {
  if (max_bytes < 0 || static_cast<int64_t>(text.size()) <= max_bytes) return text;
  const auto continuation = [&](size_t i) {
    return (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80;
  };
  // A UTF-8 character has at most 3 continuation bytes: a longer run is not
  // UTF-8 and is left where it is, for the tokenizer to refuse.
  if (keep_end) {
    size_t begin = text.size() - static_cast<size_t>(max_bytes);
    for (int step = 0; step < 3 && begin < text.size() && continuation(begin); ++step) ++begin;
    return text.substr(begin);
  }
  size_t end = static_cast<size_t>(max_bytes);
  for (int step = 0; step < 3 && end > 0 && continuation(end); ++step) --end;
  return text.substr(0, end);
}

std::vector<int32_t> FrameSequence(absl::Span<const int32_t> ids, const SequenceOptions& options) {
  const int64_t specials = (options.first_id >= 0 ? 1 : 0) + (options.last_id >= 0 ? 1 : 0);
  const auto room = static_cast<size_t>(std::max<int64_t>(0, options.max_length - specials));
  const size_t keep = std::min(ids.size(), room);
  const size_t from = options.keep_end ? ids.size() - keep : 0;
  std::vector<int32_t> out;
  out.reserve(keep + static_cast<size_t>(specials));
  if (options.first_id >= 0) out.push_back(options.first_id);
  out.insert(out.end(), ids.begin() + static_cast<std::ptrdiff_t>(from),
             ids.begin() + static_cast<std::ptrdiff_t>(from + keep));
  if (options.last_id >= 0) out.push_back(options.last_id);
  return out;
}

PaddedBatch PadToLongest(const std::vector<std::vector<int32_t>>& sequences, int32_t pad_id) {
  PaddedBatch batch;
  batch.rows = static_cast<int64_t>(sequences.size());
  for (const auto& s : sequences) batch.length = std::max<int64_t>(batch.length, s.size());
  batch.input_ids.assign(static_cast<size_t>(batch.rows * batch.length), pad_id);
  batch.attention_mask.assign(batch.input_ids.size(), 0);
  for (size_t r = 0; r < sequences.size(); ++r) {
    const size_t at = r * static_cast<size_t>(batch.length);
    std::copy(sequences[r].begin(), sequences[r].end(), batch.input_ids.begin() + at);
    std::fill_n(batch.attention_mask.begin() + at, sequences[r].size(), 1);
  }
  return batch;
}

std::vector<int64_t> LengthBucketedOrder(absl::Span<const int32_t> lengths, int64_t batch_size,
                                         uint64_t seed, int64_t window_batches) {
  std::vector<int64_t> order(lengths.size());
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(order.begin(), order.end(), rng);
  batch_size = std::max<int64_t>(1, batch_size);
  const int64_t window = batch_size * std::max<int64_t>(1, window_batches);
  const auto n = static_cast<int64_t>(order.size());
  if (window_batches <= 1) return order;
  for (int64_t start = 0; start < n; start += window) {
    const int64_t end = std::min(n, start + window);
    // Stable on the shuffled order: ties stay random.
    std::stable_sort(order.begin() + start, order.begin() + end, [&](int64_t a, int64_t b) {
      return lengths[static_cast<size_t>(a)] < lengths[static_cast<size_t>(b)];
    });
    // The window's batches in a random order, so that an epoch does not run
    // from short to long texts within each window.
    std::vector<int64_t> batches;
    for (int64_t b = start; b < end; b += batch_size) batches.push_back(b);
    std::shuffle(batches.begin(), batches.end(), rng);
    std::vector<int64_t> reordered;
    reordered.reserve(static_cast<size_t>(end - start));
    for (const int64_t b : batches) {
      reordered.insert(reordered.end(), order.begin() + b,
                       order.begin() + std::min(end, b + batch_size));
    }
    std::copy(reordered.begin(), reordered.end(), order.begin() + start);
  }
  return order;
}

double PaddingShare(absl::Span<const int32_t> lengths, absl::Span<const int64_t> order,
                    int64_t batch_size) {
  batch_size = std::max<int64_t>(1, batch_size);
  int64_t tokens = 0;
  int64_t positions = 0;
  for (size_t start = 0; start < order.size(); start += static_cast<size_t>(batch_size)) {
    const size_t end = std::min(order.size(), start + static_cast<size_t>(batch_size));
    int64_t longest = 0;
    for (size_t i = start; i < end; ++i) {
      const int32_t len = lengths[static_cast<size_t>(order[i])];
      tokens += len;
      longest = std::max<int64_t>(longest, len);
    }
    positions += longest * static_cast<int64_t>(end - start);
  }
  return positions == 0 ? 0.0 : 1.0 - static_cast<double>(tokens) / positions;
}

}  // namespace kaizen::text
