// Durable file writes: data goes to a temporary file beside the target, is
// fsync'ed, then renamed over the target and the directory is fsync'ed, so a
// reader (or a crash) sees either the old file or the complete new one.
#pragma once

#include <cstdio>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace kaizen::common {

class AtomicFileWriter {
 public:
  // Opens `<path>.tmp-<random>` for writing. `buffer_bytes` > 0 gives the
  // stream a buffer of that size (a large file written in small pieces: one
  // write(2) per buffer instead of per 4 KiB); 0 keeps stdio's default.
  static absl::Status Open(const std::string& path, AtomicFileWriter* writer,
                           size_t buffer_bytes = 0);

  AtomicFileWriter() = default;
  AtomicFileWriter(AtomicFileWriter&& other) noexcept;
  AtomicFileWriter& operator=(AtomicFileWriter&& other) noexcept;
  // Removes the temporary file unless Commit() succeeded.
  ~AtomicFileWriter();

  absl::Status Append(absl::string_view data);
  absl::Status Append(const void* data, size_t size);
  // fsync, rename onto the target, fsync the directory.
  absl::Status Commit();
  // Drops the temporary file.
  void Abandon();

  int64_t bytes_written() const { return bytes_written_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::string tmp_path_;
  FILE* file_ = nullptr;
  std::unique_ptr<char[]> buffer_;  // the stream's buffer, when Open was given a size
  int64_t bytes_written_ = 0;
};

// Writes `data` to `path` atomically.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view data);

// fsyncs a directory so that a rename or unlink inside it is durable.
absl::Status SyncDirectory(const std::string& dir);

// Reads a whole file.
absl::Status ReadFile(const std::string& path, std::string* out);

// Returns a random lower-case hex string of `bytes` random bytes.
std::string RandomHex(int bytes);

// fsyncs `from`, renames it to `to` (same file system) and fsyncs the target
// directory: the durable way to move a finished temporary file into place.
absl::Status DurableRename(const std::string& from, const std::string& to);

// Removes the tree at `path` (a link itself, not its target; nothing there is
// no error). Where something in it took the owner's access to a folder away
// (a pod's chmod 000 under an export's out/), the folders are given it back
// (u+rwx; each reached by its parent's descriptor, never through a link, at
// most 128 levels deep) and the removal retried; what still resists is
// reported.
absl::Status RemoveTree(const std::string& path);

}  // namespace kaizen::common
