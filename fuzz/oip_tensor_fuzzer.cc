// Open Inference Protocol input decoding (the torch-free part of ModelInfer):
// BYTES element splitting and FP32 shape/size checks.
// Input: a mode byte; for FP32, a rank byte and that many 8-byte dimensions,
// then a 3-byte model shape [C, H, W], then the raw contents.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "server/common/oip_tensor.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  ++data, --size;
  if (mode % 2 == 0) {
    const absl::string_view raw(reinterpret_cast<const char*>(data), size);
    const auto elements = kaizen::common::SplitOipRawBytes(raw, "input");
    if (!elements.ok()) return 0;
    size_t total = 0;
    for (absl::string_view e : *elements) {
      kaizen::fuzz::Check(e.data() >= raw.data() && e.data() + e.size() <= raw.data() + raw.size());
      total += 4 + e.size();
    }
    kaizen::fuzz::Check(total == raw.size());
    return 0;
  }
  if (size < 1) return 0;
  const size_t rank = data[0] % 6;
  ++data, --size;
  if (size < rank * 8 + 3) return 0;
  std::vector<int64_t> shape(rank);
  for (size_t i = 0; i < rank; ++i) std::memcpy(&shape[i], data + 8 * i, 8);
  data += rank * 8, size -= rank * 8;
  const std::vector<int64_t> chw = {data[0] % 4, data[1], data[2]};
  data += 3, size -= 3;
  const std::string raw(reinterpret_cast<const char*>(data), size);
  const bool use_raw = mode & 2;
  std::vector<float> contents(size / sizeof(float));
  if (!contents.empty()) std::memcpy(contents.data(), data, contents.size() * sizeof(float));
  const auto batch =
      kaizen::common::DecodeOipFp32(shape, chw, 256, use_raw ? &raw : nullptr, contents, "input");
  if (!batch.ok()) return 0;
  kaizen::fuzz::Check(batch->n >= 1 && batch->n <= 256);
  kaizen::fuzz::Check(static_cast<int64_t>(batch->values.size()) ==
                      batch->n * chw[0] * chw[1] * chw[2]);
  return 0;
}
