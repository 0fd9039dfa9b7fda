// A minimal ZIP writer (no ZIP64, stored or deflated members) whose fields
// tests can falsify, for the ZIP and TorchScript archive checks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kaizen::test_util {

struct ZipEntry {
  std::string name;
  std::string data;
  bool deflate = false;
  // When set, the directory lies about the uncompressed size.
  int64_t declared_size = -1;
};

std::string MakeZip(const std::vector<ZipEntry>& entries);

// `data` as one gzip member (level 6).
std::string Gzip(const std::string& data);

}  // namespace kaizen::test_util
