#include "client/lib/temp_file.h"

#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace kaizen::client {

absl::StatusOr<TempFile> TempFile::Create(const std::string& suffix) {
  const char* tmpdir = std::getenv("TMPDIR");
  const std::string dir = (tmpdir != nullptr && tmpdir[0] != '\0') ? tmpdir : "/tmp";
  std::string pattern = absl::StrCat(dir, "/kaizen-XXXXXX", suffix);
  std::vector<char> name(pattern.begin(), pattern.end());
  name.push_back('\0');
  const int fd = ::mkstemps(name.data(), static_cast<int>(suffix.size()));
  if (fd < 0) {
    return absl::InternalError(
        absl::StrCat("cannot create a temporary file in ", dir, ": ", std::strerror(errno)));
  }
  ::close(fd);
  return TempFile(std::string(name.data()));
}

TempFile::TempFile(TempFile&& other) noexcept : path_(std::exchange(other.path_, std::string())) {}

TempFile& TempFile::operator=(TempFile&& other) noexcept {
  if (this != &other) {
    Remove();
    path_ = std::exchange(other.path_, std::string());
  }
  return *this;
}

TempFile::~TempFile() { Remove(); }

void TempFile::Remove() {
  if (!path_.empty()) ::unlink(path_.c_str());
  path_.clear();
}

}  // namespace kaizen::client
