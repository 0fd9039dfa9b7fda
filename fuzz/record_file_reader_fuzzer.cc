// The .krf record file reader: the trailer, the index (class names, record
// entries, bounds against the map) and every record's checksum. (Files are
// written by the server, but a damaged disk or a copied file must give
// DataLoss, never a crash or a read outside the map.)
#include <cstdint>

#include "fuzz/fuzz_util.h"
#include "server/datasets/record_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static kaizen::fuzz::MemFile file("krf");
  file.Set(data, size);
  kaizen::datasets::RecordFileLimits limits;
  limits.max_records = 1 << 16;
  auto opened = kaizen::datasets::RecordFile::Open(file.path(), limits);
  if (!opened.ok()) return 0;
  const auto& f = **opened;
  for (uint64_t i = 0; i < f.size(); ++i) {
    const auto& r = f.info(i);
    kaizen::fuzz::Check(r.label >= 0 && static_cast<size_t>(r.label) < f.class_names().size());
    kaizen::fuzz::Check(r.offset + r.size <= f.file_bytes());
    const auto bytes = f.Read(i);
    if (bytes.ok()) kaizen::fuzz::Check(bytes->size() == r.size);
  }
  // Encoded records decode too (a fuzzed JPEG inside a record reaches the
  // decoder); the budget keeps a fuzzed index from asking for gigabytes.
  kaizen::datasets::DecodeLimits decode;
  decode.max_jpeg_scans = 20;
  const auto all = f.ReadAll(decode, uint64_t{64} << 20);
  if (all.ok()) kaizen::fuzz::Check(all->records.size() == f.size());
  return 0;
}
