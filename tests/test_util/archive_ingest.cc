#include "tests/test_util/archive_ingest.h"

#include <memory>
#include <utility>

#include "server/common/status_macros.h"
#include "server/datasets/archive_ingestor.h"
#include "server/datasets/record_file.h"

namespace kaizen::test_util {

absl::StatusOr<datasets::IngestResult> IngestArchiveAndRead(const std::string& archive_path,
                                                            const std::string& display_name,
                                                            const datasets::IngestOptions& options,
                                                            const std::string& record_path) {
  datasets::IngestResult result;
  ASSIGN_OR_RETURN(result.summary, datasets::IngestImageFolderArchive(archive_path, display_name,
                                                                      options, record_path));
  ASSIGN_OR_RETURN(std::unique_ptr<datasets::RecordFile> file,
                   datasets::RecordFile::Open(record_path));
  ASSIGN_OR_RETURN(result.data, file->ReadAll());
  return result;
}

}  // namespace kaizen::test_util
