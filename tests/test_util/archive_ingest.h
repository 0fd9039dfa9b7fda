// Image-folder ingestion as the tests check it: the summary, and the records
// the ingestor stored, read back and decoded.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "server/datasets/ingest_options.h"

namespace kaizen::test_util {

// Runs IngestImageFolderArchive into the record file `record_path`, then
// reads that file back with RecordFile::ReadAll: the summary and the decoded
// data, as IDX ingestion returns them.
absl::StatusOr<datasets::IngestResult> IngestArchiveAndRead(const std::string& archive_path,
                                                            const std::string& display_name,
                                                            const datasets::IngestOptions& options,
                                                            const std::string& record_path);

}  // namespace kaizen::test_util
