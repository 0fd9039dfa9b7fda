// The IDX parser (plain and gzip): headers, checked sizes, the budget, labels.
// Input: a 2-byte little-endian length n, then n bytes of the images file,
// then the labels file.
#include <algorithm>
#include <cstdint>

#include "fuzz/fuzz_util.h"
#include "server/datasets/idx_ingestor.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static kaizen::fuzz::MemFile images("images");
  static kaizen::fuzz::MemFile labels("labels");
  if (size < 2) return 0;
  const size_t n = std::min<size_t>(data[0] | data[1] << 8, size - 2);
  images.Set(data + 2, n);
  labels.Set(data + 2 + n, size - 2 - n);
  kaizen::datasets::IngestOptions options;
  options.max_image_pixels = 1 << 16;
  options.max_examples = 10'000;
  options.budget.max_bytes = int64_t{64} << 20;
  options.budget.ratio_allowance_bytes = int64_t{4} << 20;
  const auto result =
      kaizen::datasets::IngestIdx(images.path(), labels.path(), {}, "images", "labels", options);
  if (!result.ok()) return 0;
  const kaizen::datasets::DecodedDataset& d = result->data;
  for (const auto& r : d.records) {
    kaizen::fuzz::Check(r.height > 0 && r.width > 0 && r.channels == 1);
    kaizen::fuzz::Check(r.offset + int64_t{r.height} * r.width <=
                        static_cast<int64_t>(d.pixels.size()));
  }
  return 0;
}
