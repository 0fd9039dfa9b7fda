// Helpers shared by the fuzz targets: the code under test reads files by
// path, so each input is put in an in-memory file (memfd) reached through
// /proc/self/fd, reused across iterations instead of touching the disk.
#pragma once

#include <dirent.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

namespace kaizen::fuzz {

class MemFile {
 public:
  explicit MemFile(const char* name) : fd_(memfd_create(name, 0)) {
    if (fd_ < 0) std::abort();
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;

  // Replaces the file's contents with `size` bytes at `data`.
  void Set(const uint8_t* data, size_t size) {
    if (ftruncate(fd_, 0) != 0) std::abort();
    size_t done = 0;
    while (done < size) {
      const ssize_t n = pwrite(fd_, data + done, size - done, static_cast<off_t>(done));
      if (n <= 0) std::abort();
      done += static_cast<size_t>(n);
    }
  }
  // Appends `size` bytes at `data` to the file's end.
  void Append(const uint8_t* data, size_t size) {
    const off_t end = lseek(fd_, 0, SEEK_END);
    if (end < 0) std::abort();
    size_t done = 0;
    while (done < size) {
      const ssize_t n = pwrite(fd_, data + done, size - done, end + static_cast<off_t>(done));
      if (n <= 0) std::abort();
      done += static_cast<size_t>(n);
    }
  }
  const std::string& path() const { return path_; }

 private:
  int fd_;
  std::string path_;
};

// A directory of this process's own for code under test that writes files
// by path (temporary file, then rename); created on first use. The caller
// removes what it writes; the empty directory is removed at exit.
inline const std::string& ScratchDir() {
  static const std::string* dir = [] {
    const char* base = std::getenv("TMPDIR");
    std::string pattern =
        std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/kaizen-fuzz-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) std::abort();
    auto* made = new std::string(pattern);
    std::atexit([] { rmdir(ScratchDir().c_str()); });
    return made;
  }();
  return *dir;
}

// Whether `dir` holds no entry besides "." and "..".
inline bool IsEmptyDir(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return false;
  bool empty = true;
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") empty = false;
  }
  closedir(d);
  return empty;
}

// Aborts (a finding) when an invariant of a successful result does not hold.
inline void Check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace kaizen::fuzz
