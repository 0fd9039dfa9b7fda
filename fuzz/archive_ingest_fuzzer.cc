// The image-folder upload path: libarchive (tar, gzip/bzip2/xz, zip), path
// checks, the decode budget, image decoding and the summary.
#include <cstdint>

#include "fuzz/fuzz_util.h"
#include "server/datasets/archive_ingestor.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static kaizen::fuzz::MemFile file("archive");
  file.Set(data, size);
  kaizen::datasets::IngestOptions options;
  options.max_image_pixels = 1 << 20;
  options.max_examples = 1000;
  options.max_listed = 8;
  options.budget.max_bytes = int64_t{64} << 20;
  options.budget.ratio_allowance_bytes = int64_t{4} << 20;
  const auto result = kaizen::datasets::IngestImageFolderArchive(file.path(), "fuzz", options);
  if (!result.ok()) return 0;
  const kaizen::datasets::DecodedDataset& d = result->data;
  kaizen::fuzz::Check(d.class_names.size() >= 2);
  for (const auto& r : d.records) {
    kaizen::fuzz::Check(r.label >= 0 && static_cast<size_t>(r.label) < d.class_names.size());
    const int64_t bytes = int64_t{r.height} * r.width * r.channels;
    kaizen::fuzz::Check(r.offset >= 0 && r.offset + bytes <= static_cast<int64_t>(d.pixels.size()));
  }
  kaizen::fuzz::Check(result->summary.report().ignored_files_size() <= options.max_listed);
  return 0;
}
