#include "server/jobs/export_folders.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "server/common/atomic_file.h"
#include "server/common/logging.h"
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

constexpr absl::string_view kReservationPrefix = ".reserved-";
// Levels of folders under an export that a listing enters.
constexpr int kMaxMeasuredDepth = 64;

// What deleting the folder `dir` frees: the blocks of its regular files
// whose every link is inside it (a file that an export shares with a live
// dataset, or with another export, frees nothing), from at most
// `max_entries` entries. A folder that cannot be read, or an error while
// walking, leaves the figure incomplete rather than failing the listing:
// what is under out/ was written by the pods.
void MeasureFolder(const std::filesystem::path& dir, int64_t max_entries, ExportFolder* f) {
  struct Links {
    nlink_t seen = 0;
    nlink_t total = 0;
    int64_t bytes = 0;
  };
  absl::flat_hash_map<ino_t, Links> linked;  // files with several links
  std::error_code ec;
  std::filesystem::recursive_directory_iterator it(
      dir, std::filesystem::directory_options::skip_permission_denied, ec);
  int64_t entries = 0;
  for (const std::filesystem::recursive_directory_iterator end; !ec && it != end;
       it.increment(ec)) {
    if (++entries > max_entries) {
      f->size_incomplete = true;
      break;
    }
    struct stat st;
    if (::lstat(it->path().c_str(), &st) != 0) {
      // Removed meanwhile, or out of reach (a path beyond PATH_MAX).
      if (errno != ENOENT) f->size_incomplete = true;
      continue;
    }
    if (S_ISDIR(st.st_mode)) {
      // The walk holds a descriptor per level: folders deeper than this are
      // not entered.
      if (it.depth() + 1 >= kMaxMeasuredDepth) {
        f->size_incomplete = true;
        it.disable_recursion_pending();
      } else if (::faccessat(AT_FDCWD, it->path().c_str(), R_OK | X_OK, AT_EACCESS) != 0) {
        f->size_incomplete = true;  // skipped: this process cannot read it
      }
    }
    if (!S_ISREG(st.st_mode)) continue;
    const int64_t bytes = static_cast<int64_t>(st.st_blocks) * 512;
    if (st.st_nlink == 1) {
      f->size_bytes += bytes;
    } else {
      Links& l = linked[st.st_ino];
      ++l.seen;
      l.total = st.st_nlink;
      l.bytes = bytes;
    }
  }
  if (ec && ec != std::errc::no_such_file_or_directory) f->size_incomplete = true;
  for (const auto& [ino, l] : linked) {
    if (l.seen >= l.total) f->size_bytes += l.bytes;
  }
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
                                                            const std::string& job_id,
                                                            int64_t max_entries) {
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
    MeasureFolder(it->path(), max_entries, &f);
    out.push_back(std::move(f));
  }
  if (ec) return absl::InternalError(absl::StrCat("cannot list exports/: ", ec.message()));
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
  if (ec) return absl::InternalError(absl::StrCat("cannot list exports/: ", ec.message()));
  return n;
}

absl::StatusOr<ExportReservation> ExportReservation::Reserve(const std::string& export_dir,
                                                             const std::string& folder,
                                                             int max_exports, absl::Duration wait) {
  std::error_code ec;
  std::filesystem::create_directories(export_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create exports/: ", ec.message()));
  const std::string lock_path = absl::StrCat(export_dir, "/.lock");
  const int lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (lock_fd < 0) {
    return absl::InternalError(absl::StrCat("cannot open exports/.lock: ", std::strerror(errno)));
  }
  // Closing the descriptor releases the lock, on every path out.
  const absl::Cleanup close_lock = [lock_fd] { ::close(lock_fd); };
  const absl::Time give_up = absl::Now() + wait;
  while (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    if (errno != EWOULDBLOCK) {
      return absl::InternalError(absl::StrCat("cannot lock exports/.lock: ", std::strerror(errno)));
    }
    if (absl::Now() >= give_up) {
      return absl::UnavailableError(absl::StrCat(
          "another replica sharing the data directory has held exports/.lock for more than ",
          absl::FormatDuration(wait), " while counting the exports; try again"));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }

  // The exports in progress, then those in place. In this order, an export
  // whose folder is put in place meanwhile is counted at least once: its
  // reservation is released only after its rename. A reservation that can
  // be locked here is released, or its holder died; one whose folder is
  // there already counts with the folders.
  int existing = 0;
  for (std::filesystem::directory_iterator it(export_dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!absl::StartsWith(name, kReservationPrefix)) continue;
    // Read-write: NFS maps an exclusive flock to a write lock.
    const int fd = ::open(it->path().c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
      // Released meanwhile; or held by a holder this process may not open
      // (another user): counted.
      existing += errno != ENOENT;
      continue;
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) {
      ::unlink(it->path().c_str());
    } else {
      const std::string target =
          absl::StrCat(export_dir, "/", name.substr(kReservationPrefix.size()));
      struct stat st;
      existing += ::lstat(target.c_str(), &st) != 0;
    }
    ::close(fd);
  }
  if (ec) return absl::InternalError(absl::StrCat("cannot list exports/: ", ec.message()));
  ASSIGN_OR_RETURN(const int in_place, CountExportFolders(export_dir));
  existing += in_place;
  if (existing >= max_exports) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the data directory holds ", existing,
        " exports, finished or in progress (--max_exports=", max_exports,
        "); delete one first (DeleteExport, kaizenctl jobs delete-export; ListExports lists "
        "them)"));
  }
  const std::string path = absl::StrCat(export_dir, "/", kReservationPrefix, folder);
  struct stat st;
  if (::lstat(absl::StrCat(export_dir, "/", folder).c_str(), &st) == 0) {
    return absl::AlreadyExistsError(absl::StrCat("exports/", folder, " exists already"));
  }
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0 && errno == EEXIST) {
    return absl::AlreadyExistsError(absl::StrCat("exports/", folder, " is reserved already"));
  }
  if (fd < 0) {
    return absl::InternalError(
        absl::StrCat("cannot reserve exports/", folder, ": ", std::strerror(errno)));
  }
  ExportReservation reservation(path, fd);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    return absl::InternalError(absl::StrCat("cannot lock the reservation of exports/", folder, ": ",
                                            std::strerror(errno)));
  }
  return reservation;
}

ExportReservation::ExportReservation(ExportReservation&& other) noexcept
    : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)) {
  other.path_.clear();
}

ExportReservation& ExportReservation::operator=(ExportReservation&& other) noexcept {
  if (this != &other) {
    Release();
    path_ = std::exchange(other.path_, "");
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

void ExportReservation::Release() {
  if (!path_.empty()) ::unlink(path_.c_str());
  if (fd_ >= 0) ::close(fd_);
  path_.clear();
  fd_ = -1;
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
  const absl::Status removed = common::RemoveTree(doomed);
  if (!removed.ok()) {
    // What remains goes back, listed and counted toward --max_exports: it
    // is not freed, and a deletion that freed nothing is no deletion.
    common::LogWarning("export not all removed; what remains is back in exports/",
                       {{"directory", folder}, {"error", removed.message()}});
    if (std::rename(doomed.c_str(), path.c_str()) != 0) {
      return absl::InternalError(absl::StrCat(
          "exports/", folder, " could not all be removed, nor put back: ", std::strerror(errno)));
    }
    return absl::InternalError(absl::StrCat(
        "exports/", folder,
        " could not all be removed (what its pods wrote under out/ resists: nested beyond the "
        "levels the server walks, or not the server's); it stays listed; remove it on the "
        "volume"));
  }
  return absl::OkStatus();
}

}  // namespace kaizen::jobs
