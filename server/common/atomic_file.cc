#include "server/common/atomic_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace kaizen::common {

static absl::Status ErrnoStatus(absl::string_view what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

std::string RandomHex(int bytes) {
  thread_local absl::BitGen gen;
  std::string raw(bytes, '\0');
  for (char& c : raw) c = static_cast<char>(absl::Uniform<uint8_t>(gen));
  return absl::BytesToHexString(raw);
}

absl::Status AtomicFileWriter::Open(const std::string& path, AtomicFileWriter* writer,
                                    size_t buffer_bytes) {
  AtomicFileWriter w;
  w.path_ = path;
  w.tmp_path_ = absl::StrCat(path, ".tmp-", RandomHex(6));
  w.file_ = std::fopen(w.tmp_path_.c_str(), "wbx");
  if (w.file_ == nullptr) return ErrnoStatus("cannot create", w.tmp_path_);
  if (buffer_bytes > 0) {
    w.buffer_ = std::make_unique<char[]>(buffer_bytes);
    if (std::setvbuf(w.file_, w.buffer_.get(), _IOFBF, buffer_bytes) != 0) {
      return ErrnoStatus("cannot set the write buffer of", w.tmp_path_);
    }
  }
  *writer = std::move(w);
  return absl::OkStatus();
}

AtomicFileWriter::AtomicFileWriter(AtomicFileWriter&& other) noexcept { *this = std::move(other); }

AtomicFileWriter& AtomicFileWriter::operator=(AtomicFileWriter&& other) noexcept {
  if (this != &other) {
    Abandon();
    path_ = std::move(other.path_);
    tmp_path_ = std::move(other.tmp_path_);
    file_ = other.file_;
    buffer_ = std::move(other.buffer_);
    bytes_written_ = other.bytes_written_;
    other.file_ = nullptr;
    other.tmp_path_.clear();
  }
  return *this;
}

AtomicFileWriter::~AtomicFileWriter() { Abandon(); }

absl::Status AtomicFileWriter::Append(absl::string_view data) {
  return Append(data.data(), data.size());
}

absl::Status AtomicFileWriter::Append(const void* data, size_t size) {
  if (file_ == nullptr) return absl::FailedPreconditionError("writer not open");
  if (size > 0 && std::fwrite(data, 1, size, file_) != size) {
    return ErrnoStatus("cannot write", tmp_path_);
  }
  bytes_written_ += static_cast<int64_t>(size);
  return absl::OkStatus();
}

absl::Status AtomicFileWriter::Commit() {
  if (file_ == nullptr) return absl::FailedPreconditionError("writer not open");
  if (std::fflush(file_) != 0) return ErrnoStatus("cannot flush", tmp_path_);
  if (::fsync(fileno(file_)) != 0) return ErrnoStatus("cannot fsync", tmp_path_);
  std::fclose(file_);
  file_ = nullptr;
  if (std::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    absl::Status st = ErrnoStatus("cannot rename onto", path_);
    std::remove(tmp_path_.c_str());
    tmp_path_.clear();
    return st;
  }
  tmp_path_.clear();
  return SyncDirectory(std::filesystem::path(path_).parent_path().string());
}

void AtomicFileWriter::Abandon() {
  if (file_ != nullptr) {
    std::fclose(file_);
    file_ = nullptr;
  }
  if (!tmp_path_.empty()) {
    std::remove(tmp_path_.c_str());
    tmp_path_.clear();
  }
}

absl::Status WriteFileAtomically(const std::string& path, absl::string_view data) {
  AtomicFileWriter w;
  if (absl::Status st = AtomicFileWriter::Open(path, &w); !st.ok()) return st;
  if (absl::Status st = w.Append(data); !st.ok()) return st;
  return w.Commit();
}

absl::Status SyncDirectory(const std::string& dir) {
  const std::string d = dir.empty() ? "." : dir;
  int fd = ::open(d.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return ErrnoStatus("cannot open directory", d);
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return ErrnoStatus("cannot fsync directory", d);
  return absl::OkStatus();
}

absl::Status ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return ErrnoStatus("cannot read", path);
  *out = std::move(ss).str();
  return absl::OkStatus();
}

absl::Status DurableRename(const std::string& from, const std::string& to) {
  int fd = ::open(from.c_str(), O_RDONLY);
  if (fd < 0) return ErrnoStatus("cannot open", from);
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return ErrnoStatus("cannot fsync", from);
  if (std::rename(from.c_str(), to.c_str()) != 0) return ErrnoStatus("cannot rename onto", to);
  return SyncDirectory(std::filesystem::path(to).parent_path().string());
}

namespace {

// Levels of folders RemoveTree gives access to (one descriptor each, held
// at once): far beyond what a real tree needs.
constexpr int kMaxAccessDepth = 128;

// Gives the owner rwx on the folder `name` in the folder `parent` (a
// descriptor, or AT_FDCWD) and on every folder under it, top down, each
// reached by a descriptor of its parent and never through a link: what
// someone changes in the tree meanwhile cannot steer it outside. False where
// it stopped short (deeper than kMaxAccessDepth, or refused).
bool GiveOwnerAccess(int parent, const char* name, int depth) {
  struct stat st;
  if (::fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return errno == ENOENT;
  if (!S_ISDIR(st.st_mode)) return true;
  if (depth >= kMaxAccessDepth) return false;
  if ((st.st_mode & S_IRWXU) != S_IRWXU &&
      ::fchmodat(parent, name, (st.st_mode & 07777) | S_IRWXU, AT_SYMLINK_NOFOLLOW) != 0) {
    return false;
  }
  const int fd = ::openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return false;
  DIR* dir = ::fdopendir(fd);
  if (dir == nullptr) {
    ::close(fd);
    return false;
  }
  std::vector<std::string> folders;
  while (const dirent* e = ::readdir(dir)) {
    const std::string child = e->d_name;
    if (child == "." || child == "..") continue;
    if (e->d_type == DT_DIR || e->d_type == DT_UNKNOWN) folders.push_back(child);
  }
  bool complete = true;
  for (const std::string& f : folders) {
    complete = GiveOwnerAccess(::dirfd(dir), f.c_str(), depth + 1) && complete;
  }
  ::closedir(dir);
  return complete;
}

}  // namespace

absl::Status RemoveTree(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  bool complete = true;
  if (ec && ec == std::errc::permission_denied) {
    complete = GiveOwnerAccess(AT_FDCWD, path.c_str(), 0);
    ec.clear();
    std::filesystem::remove_all(path, ec);
  }
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot remove ", path, ": ", ec.message(),
                     complete ? ""
                              : absl::StrCat(" (folders nested deeper than ", kMaxAccessDepth,
                                             " levels, or not this user's, stay closed)")));
  }
  return absl::OkStatus();
}

}  // namespace kaizen::common
