// The image-folder upload path: libarchive (tar, gzip/bzip2/xz, zip), path
// checks, the decode budget, image decoding, the record file it writes and
// the summary; inputs of odd size run under a stored-resolution cap, so the
// downscale and re-encoding are fuzzed too.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>

#include "fuzz/fuzz_util.h"
#include "server/datasets/archive_ingestor.h"
#include "server/datasets/record_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static kaizen::fuzz::MemFile file("archive");
  file.Set(data, size);
  kaizen::datasets::IngestOptions options;
  options.max_image_pixels = 1 << 20;
  options.max_examples = 1000;
  options.max_listed = 8;
  options.budget.max_bytes = int64_t{64} << 20;
  options.budget.ratio_allowance_bytes = int64_t{4} << 20;
  options.max_stored_shorter_side = size % 2 == 1 ? 24 : 0;
  static const std::string record_path = kaizen::fuzz::ScratchDir() + "/dataset.krf";
  const auto summary =
      kaizen::datasets::IngestImageFolderArchive(file.path(), "fuzz", options, record_path);
  if (!summary.ok()) {
    // A failed ingest leaves nothing behind: no record file, no temporary.
    kaizen::fuzz::Check(kaizen::fuzz::IsEmptyDir(kaizen::fuzz::ScratchDir()));
    return 0;
  }
  // What was stored reads back, decodes to the shapes its index declares, and
  // matches the summary.
  const auto stored = kaizen::datasets::RecordFile::Open(record_path);
  kaizen::fuzz::Check(stored.ok());
  const auto d = (*stored)->ReadAll();
  kaizen::fuzz::Check(d.ok());
  std::remove(record_path.c_str());
  kaizen::fuzz::Check(d->class_names.size() >= 2);
  kaizen::fuzz::Check(static_cast<int64_t>(d->records.size()) == summary->num_examples());
  kaizen::fuzz::Check(static_cast<int>(d->class_names.size()) == summary->classes_size());
  for (const auto& r : d->records) {
    kaizen::fuzz::Check(r.label >= 0 && static_cast<size_t>(r.label) < d->class_names.size());
    kaizen::fuzz::Check(options.max_stored_shorter_side == 0 ||
                        std::min(r.height, r.width) <= options.max_stored_shorter_side);
  }
  kaizen::fuzz::Check(summary->report().ignored_files_size() <= options.max_listed);
  return 0;
}
