// Bounds the bytes one upload or one Predict request may produce by
// decompression (gzip/bzip2/xz layers, zip members) and image decoding, so
// that a small input cannot cost gigabytes of memory or minutes of CPU: a
// gzip bomb, or images that each pass the pixel limit but together do not
// fit. One budget per upload or request; not thread-safe.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace kaizen::datasets {

class DecodeBudget {
 public:
  struct Options {
    // Most decoded bytes in total, whatever was received.
    int64_t max_bytes = int64_t{8} << 30;
    // Most decoded bytes per byte received (beyond the allowance below). Real
    // data stays far below it: JPEG ~16x, tar.gz of images ~17x, IDX.gz ~2x.
    double max_ratio = 200;
    // Decoded bytes always allowed, so that a small input that legitimately
    // inflates a lot (one flat-colour PNG) is not refused by the ratio.
    int64_t ratio_allowance_bytes = int64_t{64} << 20;
  };

  // `received_bytes`: what the client sent, the base of the ratio.
  DecodeBudget(const Options& options, int64_t received_bytes);

  // Records `bytes` more decoded bytes for `where` (a file or input name).
  // RESOURCE_EXHAUSTED naming `where`, the limit and how it was derived once
  // the total would pass the limit; the budget then stays exhausted.
  absl::Status Charge(int64_t bytes, absl::string_view where);

  int64_t used() const { return used_; }
  int64_t limit() const { return limit_; }
  // True once a Charge() failed: callers that turn per-file errors into
  // warnings use it to stop instead.
  bool exhausted() const { return exhausted_; }

 private:
  int64_t received_;
  int64_t limit_;
  int64_t used_ = 0;
  bool exhausted_ = false;
  Options options_;
};

}  // namespace kaizen::datasets
