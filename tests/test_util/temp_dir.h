// A temporary directory removed (with its contents) when the object dies.
#pragma once

#include <cstddef>
#include <string>

namespace kaizen::test_util {

class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // path() + "/" + name
  std::string File(const std::string& name) const;

 private:
  std::string path_;
};

// How many entries `dir` holds (files and folders, not recursive); 0 when it
// does not exist.
size_t CountFiles(const std::string& dir);

}  // namespace kaizen::test_util
