// Byte-level decoding of Open Inference Protocol (KServe v2) input tensors:
// the batch shape against a model's [C, H, W], FP32 values from
// raw_input_contents or contents, and BYTES elements. Torch-free, so that the
// parsing of untrusted request bytes can be fuzzed alone; the OIP service
// turns the result into a tensor.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace kaizen::common {

// InvalidArgument unless 1 <= n <= max_inputs; `shape` is the given shape as
// text, for the message.
absl::Status CheckOipBatchSize(int64_t n, int max_inputs, absl::string_view what,
                               absl::string_view shape);

// An FP32 input decoded to host floats, [n, C, H, W] row-major.
struct Fp32Batch {
  int64_t n = 0;
  std::vector<float> values;
};

// FP32 `shape` [N, C, H, W] or [C, H, W] against the model's `chw`, with the
// values either in `raw` (little-endian float32 bytes; nullptr when the
// request has no raw contents) or in `contents`. InvalidArgument naming `what`
// for a shape that is not the model's, a batch outside 1..max_inputs, a size
// that overflows, or a value count that does not match the shape.
absl::StatusOr<Fp32Batch> DecodeOipFp32(const std::vector<int64_t>& shape,
                                        const std::vector<int64_t>& chw, int max_inputs,
                                        const std::string* raw, absl::Span<const float> contents,
                                        absl::string_view what);

// Splits a raw BYTES tensor as Triton lays it out: per element a 4-byte
// little-endian length, then that many bytes. InvalidArgument naming `what`
// and the element when a length runs past the end.
absl::StatusOr<std::vector<absl::string_view>> SplitOipRawBytes(absl::string_view raw,
                                                                absl::string_view what);

}  // namespace kaizen::common
