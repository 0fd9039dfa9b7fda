// JPEG (libjpeg-turbo) and PNG (libpng) decoding under pixel, scan and budget
// limits.
#include <cstdint>

#include "fuzz/fuzz_util.h"
#include "server/datasets/image_decoder.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kaizen::datasets::DecodeBudget::Options budget_options;
  budget_options.max_bytes = int64_t{32} << 20;
  kaizen::datasets::DecodeBudget budget(budget_options, static_cast<int64_t>(size));
  kaizen::datasets::DecodeLimits limits;
  limits.max_pixels = 1 << 22;
  limits.max_jpeg_scans = 50;
  limits.budget = &budget;
  const auto image = kaizen::datasets::DecodeImage(
      absl::string_view(reinterpret_cast<const char*>(data), size), limits);
  if (!image.ok()) return 0;
  kaizen::fuzz::Check(image->channels == 1 || image->channels == 3);
  kaizen::fuzz::Check(static_cast<int64_t>(image->pixels.size()) ==
                      int64_t{image->height} * image->width * image->channels);
  return 0;
}
