#include "server/datasets/decode_budget.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kaizen::datasets {

DecodeBudget::DecodeBudget(const Options& options, int64_t received_bytes)
    : received_(std::max<int64_t>(0, received_bytes)), options_(options) {
  // In double, so that a large ratio times a large upload cannot overflow.
  const double by_ratio = std::max(0.0, options.max_ratio) * static_cast<double>(received_);
  const double max_int64 = static_cast<double>(std::numeric_limits<int64_t>::max());
  const int64_t ratio_limit =
      by_ratio >= max_int64 ? std::numeric_limits<int64_t>::max() : static_cast<int64_t>(by_ratio);
  limit_ = std::min(std::max<int64_t>(0, options.max_bytes),
                    std::max(ratio_limit, options.ratio_allowance_bytes));
}

absl::Status DecodeBudget::Charge(int64_t bytes, absl::string_view where) {
  bytes = std::max<int64_t>(0, bytes);
  if (!exhausted_ && bytes <= limit_ - used_) {
    used_ += bytes;
    return absl::OkStatus();
  }
  exhausted_ = true;
  return absl::ResourceExhaustedError(absl::StrFormat(
      "%s: decoding needs more than the decode budget of %d bytes (%d already decoded, %d more "
      "needed; the budget is %g decoded bytes per byte received, %d received, with at least %d "
      "and at most %d bytes); the input looks like a decompression bomb",
      where, limit_, used_, bytes, options_.max_ratio, received_, options_.ratio_allowance_bytes,
      options_.max_bytes));
}

}  // namespace kaizen::datasets
