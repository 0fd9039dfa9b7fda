// The .kds dataset file reader: header counts, class names, the record table
// and the checksum. (Files are written by the server, but a damaged disk or a
// copied file must give DataLoss, never a crash.)
#include <cstdint>

#include "fuzz/fuzz_util.h"
#include "server/datasets/dataset_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static kaizen::fuzz::MemFile file("kds");
  file.Set(data, size);
  const auto read = kaizen::datasets::ReadDatasetFile(file.path());
  if (!read.ok()) return 0;
  for (const auto& r : read->records) {
    kaizen::fuzz::Check(r.label >= 0 && static_cast<size_t>(r.label) < read->class_names.size());
    kaizen::fuzz::Check(r.offset + int64_t{r.height} * r.width * r.channels <=
                        static_cast<int64_t>(read->pixels.size()));
  }
  return 0;
}
