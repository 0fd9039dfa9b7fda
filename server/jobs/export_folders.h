// The folders ExportJob leaves under the data directory's exports/: listing
// them (with what deleting each would free), counting them for
// --max_exports, and deleting one by the name a user sends.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace kaizen::jobs {

struct ExportFolder {
  std::string folder;  // "<job id>-<6 hex>"
  std::string job_id;
  absl::Time create_time;
  // Bytes of its regular files with no other link: what deleting it frees.
  int64_t size_bytes = 0;
};

// `folder` (or "exports/<folder>") is an export's folder name: letters,
// digits and '-' (at most 200), ending in '-' and 6 lowercase hex digits.
// Returns the folder alone; INVALID_ARGUMENT naming what is wrong otherwise.
absl::StatusOr<std::string> ExportFolderName(absl::string_view directory);

// The export folders in `export_dir` (none when it does not exist), newest
// first, of job `job_id` only unless it is empty. Entries that are not an
// export's folder (a file, a link, another name) are skipped.
absl::StatusOr<std::vector<ExportFolder>> ListExportFolders(const std::string& export_dir,
                                                            const std::string& job_id = "");

// How many export folders `export_dir` holds (without their sizes).
absl::StatusOr<int> CountExportFolders(const std::string& export_dir);

// Removes the export folder named by `directory` (ExportFolderName): first
// renamed into `scratch_dir` (on the same file system), so that it is gone
// from exports/ at once, then removed. NOT_FOUND when there is none.
absl::Status DeleteExportFolder(const std::string& export_dir, const std::string& scratch_dir,
                                absl::string_view directory);

}  // namespace kaizen::jobs
