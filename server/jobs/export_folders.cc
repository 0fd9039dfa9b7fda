#include "server/jobs/export_folders.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "server/common/atomic_file.h"
#include "server/common/status_macros.h"

namespace kaizen::jobs {
namespace {

constexpr size_t kMaxFolderName = 200;
constexpr size_t kSuffix = 7;  // "-" and 6 hex digits

bool IsExportFolderName(absl::string_view name) {
  if (name.size() <= kSuffix || name.size() > kMaxFolderName) return false;
  for (const char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-') return false;
  }
  const absl::string_view suffix = name.substr(name.size() - kSuffix);
  if (suffix[0] != '-') return false;
  return std::all_of(suffix.begin() + 1, suffix.end(),
                     [](char c) { return absl::ascii_isdigit(c) || (c >= 'a' && c <= 'f'); });
}

// A real directory (not a link to one) named as an export folder.
bool IsExportFolder(const std::filesystem::directory_entry& entry) {
  std::error_code ec;
  return IsExportFolderName(entry.path().filename().string()) &&
         entry.symlink_status(ec).type() == std::filesystem::file_type::directory;
}

// Bytes of the regular files under `dir` that no other link holds.
absl::StatusOr<int64_t> OwnBytes(const std::filesystem::path& dir) {
  int64_t bytes = 0;
  std::error_code ec;
  std::filesystem::recursive_directory_iterator it(dir, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    struct stat st;
    if (::lstat(it->path().c_str(), &st) != 0) continue;  // removed meanwhile
    if (S_ISREG(st.st_mode) && st.st_nlink == 1) bytes += st.st_size;
  }
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return absl::InternalError(absl::StrCat("cannot read ", dir.string(), ": ", ec.message()));
  }
  return bytes;
}

}  // namespace

absl::StatusOr<std::string> ExportFolderName(absl::string_view directory) {
  absl::string_view name = directory;
  absl::ConsumePrefix(&name, "exports/");
  if (!IsExportFolderName(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("directory: not an export's folder (\"exports/<job id>-<6 hex digits>\", as "
                     "ListExports names it; letters, digits and '-', at most ",
                     kMaxFolderName, ")"));
  }
  return std::string(name);
}

absl::StatusOr<std::vector<ExportFolder>> ListExportFolders(const std::string& export_dir,
                                                            const std::string& job_id) {
  std::vector<ExportFolder> out;
  std::error_code ec;
  std::filesystem::directory_iterator it(export_dir, ec), end;
  if (ec == std::errc::no_such_file_or_directory) return out;
  for (; !ec && it != end; it.increment(ec)) {
    if (!IsExportFolder(*it)) continue;
    ExportFolder f;
    f.folder = it->path().filename().string();
    f.job_id = f.folder.substr(0, f.folder.size() - kSuffix);
    if (!job_id.empty() && f.job_id != job_id) continue;
    struct stat st;
    if (::lstat(it->path().c_str(), &st) != 0) continue;  // deleted meanwhile
    f.create_time = absl::TimeFromTimespec(st.st_mtim);
    ASSIGN_OR_RETURN(f.size_bytes, OwnBytes(it->path()));
    out.push_back(std::move(f));
  }
  if (ec) return absl::InternalError(absl::StrCat("cannot list ", export_dir, ": ", ec.message()));
  std::sort(out.begin(), out.end(), [](const ExportFolder& a, const ExportFolder& b) {
    if (a.create_time != b.create_time) return a.create_time > b.create_time;
    return a.folder < b.folder;
  });
  return out;
}

absl::StatusOr<int> CountExportFolders(const std::string& export_dir) {
  int n = 0;
  std::error_code ec;
  std::filesystem::directory_iterator it(export_dir, ec), end;
  if (ec == std::errc::no_such_file_or_directory) return 0;
  for (; !ec && it != end; it.increment(ec)) n += IsExportFolder(*it);
  if (ec) return absl::InternalError(absl::StrCat("cannot list ", export_dir, ": ", ec.message()));
  return n;
}

absl::Status DeleteExportFolder(const std::string& export_dir, const std::string& scratch_dir,
                                absl::string_view directory) {
  ASSIGN_OR_RETURN(const std::string folder, ExportFolderName(directory));
  const std::string path = absl::StrCat(export_dir, "/", folder);
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::NotFoundError(absl::StrCat("no export exports/", folder));
  }
  const std::string doomed =
      absl::StrCat(scratch_dir, "/deleted-export-", folder, "-", common::RandomHex(4));
  if (std::rename(path.c_str(), doomed.c_str()) != 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat("no export exports/", folder));
    return absl::InternalError(
        absl::StrCat("cannot move exports/", folder, " away: ", std::strerror(errno)));
  }
  std::error_code ec;
  std::filesystem::remove_all(doomed, ec);
  if (ec) {
    // Gone from exports/ already; the scratch folder's sweep at the next
    // start removes the rest.
    return absl::InternalError(absl::StrCat("exports/", folder,
                                            " was removed from exports/ but its files not all "
                                            "deleted: ",
                                            ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace kaizen::jobs
