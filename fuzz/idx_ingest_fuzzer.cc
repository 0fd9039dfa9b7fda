// The IDX parser (plain and gzip): headers, checked sizes, the budget, labels.
// Input: a 2-byte little-endian length n, then n bytes of the images file,
// then the labels file. Each input is read twice: as two complete files, and
// as an upload decodes it, following the files while they grow a few hundred
// bytes at a time; both readings must agree (status and data).
#include <algorithm>
#include <cstdint>

#include "fuzz/fuzz_util.h"
#include "server/datasets/idx_ingestor.h"

namespace {

// A file that grows by 317 bytes each time its reader waits for more.
struct Arriving {
  kaizen::fuzz::MemFile* file;
  const uint8_t* bytes;
  size_t size;
  size_t shown = 0;

  absl::StatusOr<bool> Wait(int64_t have) {
    while (static_cast<size_t>(have) >= shown && shown < size) {
      const size_t next = std::min(size, shown + 317);
      file->Append(bytes + shown, next - shown);
      shown = next;
    }
    return static_cast<size_t>(have) < shown;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static kaizen::fuzz::MemFile images("images");
  static kaizen::fuzz::MemFile labels("labels");
  static kaizen::fuzz::MemFile images_arriving("images-arriving");
  static kaizen::fuzz::MemFile labels_arriving("labels-arriving");
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

  images_arriving.Set(data, 0);
  labels_arriving.Set(data, 0);
  Arriving image_bytes{&images_arriving, data + 2, n};
  Arriving label_bytes{&labels_arriving, data + 2 + n, size - 2 - n};
  kaizen::datasets::IdxFile image_file{images_arriving.path(), "images",
                                       [&](int64_t have) { return image_bytes.Wait(have); },
                                       static_cast<int64_t>(n)};
  kaizen::datasets::IdxFile label_file{labels_arriving.path(), "labels",
                                       [&](int64_t have) { return label_bytes.Wait(have); },
                                       static_cast<int64_t>(size - 2 - n)};
  const auto arrived = kaizen::datasets::IngestIdx(image_file, label_file, {}, options);
  kaizen::fuzz::Check(arrived.status() == result.status());

  if (!result.ok()) return 0;
  const kaizen::datasets::DecodedDataset& d = result->data;
  kaizen::fuzz::Check(arrived->data.pixels == d.pixels);
  kaizen::fuzz::Check(arrived->data.records.size() == d.records.size());
  for (size_t i = 0; i < d.records.size(); ++i) {
    const auto& r = d.records[i];
    kaizen::fuzz::Check(r.height > 0 && r.width > 0 && r.channels == 1);
    kaizen::fuzz::Check(r.offset + int64_t{r.height} * r.width <=
                        static_cast<int64_t>(d.pixels.size()));
    kaizen::fuzz::Check(arrived->data.records[i].label == r.label);
  }
  return 0;
}
