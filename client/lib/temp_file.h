// A uniquely named file under $TMPDIR (or /tmp) that is removed when the
// object dies, e.g. the tar of a folder that is being uploaded.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace kaizen::client {

class TempFile {
 public:
  // Creates an empty file named "kaizen-<random><suffix>".
  static absl::StatusOr<TempFile> Create(const std::string& suffix);

  TempFile(TempFile&& other) noexcept;
  TempFile& operator=(TempFile&& other) noexcept;
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile();

  const std::string& path() const { return path_; }

 private:
  explicit TempFile(std::string path) : path_(std::move(path)) {}
  void Remove();

  std::string path_;
};

}  // namespace kaizen::client
