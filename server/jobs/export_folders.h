// The folders ExportJob leaves under the data directory's exports/: listing
// them (with what deleting each would free), reserving a place for a new one
// within --max_exports across every replica that shares the directory, and
// deleting one by the name a user sends.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
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
  // Bytes allocated to its regular files that no link outside it holds:
  // what deleting it frees.
  int64_t size_bytes = 0;
  // size_bytes stopped short: the folder holds more than the listing's
  // budget of entries, or some of it could not be read.
  bool size_incomplete = false;
};

// `folder` (or "exports/<folder>") is an export's folder name: letters,
// digits and '-' (at most 200), ending in '-' and 6 lowercase hex digits.
// Returns the folder alone; INVALID_ARGUMENT naming what is wrong otherwise.
absl::StatusOr<std::string> ExportFolderName(absl::string_view directory);

// The export folders in `export_dir` (none when it does not exist), newest
// first, of job `job_id` only unless it is empty. Entries that are not an
// export's folder (a file, a link, another name) are skipped. At most
// `max_entries` entries of each folder are looked at for its size (what its
// pods wrote is not the server's: it may be huge, or unreadable).
absl::StatusOr<std::vector<ExportFolder>> ListExportFolders(const std::string& export_dir,
                                                            const std::string& job_id = "",
                                                            int64_t max_entries = 10'000);

// How many export folders `export_dir` holds (without their sizes).
absl::StatusOr<int> CountExportFolders(const std::string& export_dir);

// A place for one export in progress, held from before its first write to
// after its folder is in place, so that exports never pass --max_exports
// together, through one replica or several on a shared volume.
//
// Reserve takes an exclusive advisory lock (flock(2)) on
// `export_dir`/.lock for as long as it counts, never for the export itself;
// it counts the export folders and the reservations still held, and unless
// that reaches `max_exports` adds `export_dir`/.reserved-<folder>, locked by
// this reservation until it is destroyed. A reservation whose holder died
// (its lock went with its descriptor) is removed by the next count. flock
// is honoured across NFS clients (which map it to byte-range locks) when the
// volume is mounted with locking (not `nolock`, not `local_lock=flock` or
// `all`), and by CephFS; without it every replica sees the others'
// reservations as dead and the bound holds per replica only.
class ExportReservation {
 public:
  // RESOURCE_EXHAUSTED (with the count and the flag) at the bound;
  // UNAVAILABLE when another count holds the lock longer than `wait`;
  // ALREADY_EXISTS when `folder` is in place or reserved already (a name
  // drawn twice: draw another).
  static absl::StatusOr<ExportReservation> Reserve(const std::string& export_dir,
                                                   const std::string& folder, int max_exports,
                                                   absl::Duration wait);

  ExportReservation(ExportReservation&& other) noexcept;
  ExportReservation& operator=(ExportReservation&& other) noexcept;
  ~ExportReservation() { Release(); }

 private:
  ExportReservation(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  void Release();  // removes the reservation
  std::string path_;
  int fd_;
};

// Removes the export folder named by `directory` (ExportFolderName): first
// renamed into `scratch_dir` (on the same file system), so that it is gone
// from exports/ at once, then removed (common::RemoveTree). NOT_FOUND when
// there is none, or when the name is a link rather than a folder. When part
// of it resists removal, what remains is renamed back (still listed and
// counted) and INTERNAL says so.
absl::Status DeleteExportFolder(const std::string& export_dir, const std::string& scratch_dir,
                                absl::string_view directory);

}  // namespace kaizen::jobs
