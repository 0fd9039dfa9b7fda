#include "server/store/data_dir.h"

#include <chrono>
#include <filesystem>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/common/atomic_file.h"
#include "server/common/logging.h"
#include "server/common/status_macros.h"

namespace kaizen::store {

namespace fs = std::filesystem;

namespace {

bool YoungerThan(const fs::path& path, absl::Duration min_age) {
  if (min_age <= absl::ZeroDuration()) return false;
  std::error_code ec;
  const fs::file_time_type written = fs::last_write_time(path, ec);
  if (ec) return true;  // vanished or unreadable: leave it alone
  const auto age = fs::file_time_type::clock::now() - written;
  return absl::FromChrono(std::chrono::duration_cast<std::chrono::nanoseconds>(age)) < min_age;
}

}  // namespace

absl::Status PrepareDataDir(const std::string& data_dir, absl::Duration min_age) {
  std::error_code ec;
  for (const char* sub : {"", "/tmp", "/datasets", "/models"}) {
    fs::create_directories(data_dir + sub, ec);
    if (ec) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot create ", data_dir, sub, ": ", ec.message()));
    }
  }
  for (const fs::directory_entry& e : fs::directory_iterator(data_dir + "/tmp", ec)) {
    if (YoungerThan(e.path(), min_age)) continue;
    // What an export's pods left unreadable under it is made removable.
    const absl::Status removed = common::RemoveTree(e.path().string());
    if (!removed.ok()) common::LogWarning("scratch sweep", {{"error", removed.message()}});
  }
  return absl::OkStatus();
}

absl::StatusOr<int> SweepOrphanFiles(const std::string& data_dir, MetadataStore& metadata,
                                     absl::Duration min_age) {
  ASSIGN_OR_RETURN(std::vector<std::string> files, metadata.AllFiles());
  absl::flat_hash_set<std::string> live(files.begin(), files.end());
  int removed = 0;
  std::error_code ec;
  for (const char* sub : {"datasets", "models"}) {
    const fs::path root = fs::path(data_dir) / sub;
    for (auto it = fs::recursive_directory_iterator(root, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (!it->is_regular_file()) continue;
      std::string rel = fs::relative(it->path(), data_dir).string();
      // A checkpoint's resume state lives and dies with its model file.
      if (absl::EndsWith(rel, ".resume")) rel.resize(rel.size() - 7);
      if (absl::EndsWith(rel, ".exemplars")) rel.resize(rel.size() - 10);
      if (live.contains(rel) || YoungerThan(it->path(), min_age)) continue;
      std::error_code rm;
      if (fs::remove(it->path(), rm)) {
        ++removed;
        common::LogWarning("removed orphan file", {{"file", rel}});
      }
    }
  }
  return removed;
}

}  // namespace kaizen::store
