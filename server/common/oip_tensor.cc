#include "server/common/oip_tensor.h"

#include <cstring>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/checked_math.h"
#include "server/common/input_shape.h"
#include "server/common/status_macros.h"

namespace kaizen::common {
namespace {

// Raw tensor contents are little-endian on the wire; they are copied as they
// are, which is only right on a little-endian host.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "DecodeOipFp32 copies little-endian raw tensors without swapping bytes");

}  // namespace

absl::Status CheckOipBatchSize(int64_t n, int max_inputs, absl::string_view what,
                               absl::string_view shape) {
  if (n < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " has shape ", shape, ": the batch is empty; expected at least 1 input"));
  }
  if (n > max_inputs) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has shape ", shape, ": ", n,
                                                   " inputs; at most ", max_inputs,
                                                   " are accepted in one request"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Fp32Batch> DecodeOipFp32(const std::vector<int64_t>& shape,
                                        const std::vector<int64_t>& chw, int max_inputs,
                                        const std::string* raw, absl::Span<const float> contents,
                                        absl::string_view what) {
  const std::string given = ShapeText(shape);
  const std::optional<int64_t> inputs = InputsInShape(shape, chw);
  if (!inputs.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " has shape ", given, "; expected [N, ", absl::StrJoin(chw, ", "),
                     "] or ", ShapeText(chw), " (FP32, the model's input shape)"));
  }
  Fp32Batch batch;
  batch.n = *inputs;
  RETURN_IF_ERROR(CheckOipBatchSize(batch.n, max_inputs, what, given));
  std::optional<int64_t> count = batch.n;
  for (int64_t d : chw) {
    count = d >= 0 && count.has_value() ? CheckedMul(*count, d) : std::nullopt;
  }
  const std::optional<int64_t> want_bytes =
      count.has_value() ? CheckedMul(*count, sizeof(float)) : std::nullopt;
  if (!want_bytes.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " has shape ", given, ", whose size overflows a 64-bit count"));
  }
  if (raw != nullptr) {
    if (static_cast<int64_t>(raw->size()) != *want_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": raw_input_contents[0] holds ", raw->size(), " bytes; shape ", given,
          " of FP32 needs ", *want_bytes, " (", *count, " little-endian float32 values)"));
    }
    // Copied: the bytes of a protobuf string need not be float-aligned.
    batch.values.resize(static_cast<size_t>(*count));
    if (!raw->empty()) std::memcpy(batch.values.data(), raw->data(), raw->size());
    return batch;
  }
  if (static_cast<int64_t>(contents.size()) != *count) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": contents.fp32_contents holds ",
                                                   contents.size(), " values; shape ", given,
                                                   " needs ", *count));
  }
  batch.values.assign(contents.begin(), contents.end());
  return batch;
}

absl::StatusOr<std::vector<absl::string_view>> SplitOipRawBytes(absl::string_view raw,
                                                                absl::string_view what) {
  std::vector<absl::string_view> elements;
  size_t pos = 0;
  while (pos < raw.size()) {
    if (raw.size() - pos < 4) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": raw_input_contents[0] ends inside the 4-byte length of element ",
          elements.size(), " (", raw.size() - pos,
          " bytes left); a BYTES element is a 4-byte little-endian length, then the bytes"));
    }
    const auto* p = reinterpret_cast<const unsigned char*>(raw.data() + pos);
    const uint32_t length =
        uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
    pos += 4;
    if (raw.size() - pos < length) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": element ", elements.size(), " of raw_input_contents[0] declares ",
                       length, " bytes but only ", raw.size() - pos, " remain"));
    }
    elements.push_back(raw.substr(pos, length));
    pos += length;
  }
  return elements;
}

}  // namespace kaizen::common
