// Reads a ZIP archive's central directory and single members with every size
// and offset checked before it is used, so that an uploaded TorchScript file
// (a ZIP) can be vetted before LibTorch's own reader touches it. Torch-free,
// so that it can be fuzzed on its own.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kaizen::sandbox {

// Random access to the archive's bytes: copies `size` bytes at `offset` into
// `out`; the reader never asks past the size it was given.
using ReadAt = std::function<absl::Status(uint64_t offset, size_t size, char* out)>;

struct ZipLimits {
  // Most members in one archive.
  int64_t max_members = 100'000;
  // Largest declared uncompressed size of one member.
  int64_t max_member_bytes = int64_t{4} << 30;
  // Largest sum of the declared uncompressed sizes of all members.
  int64_t max_total_bytes = int64_t{8} << 30;
  // Largest uncompressed/compressed ratio of a deflated member.
  int64_t max_deflate_ratio = 200;
  // Longest member name.
  int max_name_length = 1024;
};

struct ZipMember {
  std::string name;
  uint16_t method = 0;  // 0 stored, 8 deflated
  uint32_t crc32 = 0;
  uint64_t compressed_size = 0;
  uint64_t uncompressed_size = 0;
  // Where the member's (compressed) bytes start in the archive.
  uint64_t data_offset = 0;
};

// Parses the end-of-central-directory record (ZIP64 too) and every central
// directory entry of an archive of `archive_size` bytes. Refused, with
// INVALID_ARGUMENT naming the member and the limit: a structure that points
// outside the archive, overlapping data, encrypted members, methods other than
// stored and deflate, names that are empty, absolute, contain "..", NUL or
// repeat, and anything over `limits`.
absl::StatusOr<std::vector<ZipMember>> ReadZipDirectory(uint64_t archive_size, const ReadAt& read,
                                                        const ZipLimits& limits);

// The uncompressed bytes of `member`, at most `max_bytes` of them (larger
// members are INVALID_ARGUMENT without being read); the CRC-32 is checked.
absl::StatusOr<std::string> ReadZipMember(const ZipMember& member, const ReadAt& read,
                                          int64_t max_bytes);

// A ReadAt over bytes in memory (fuzzing, tests); `bytes` must outlive it.
ReadAt ReadFromMemory(absl::string_view bytes);

// A ReadAt over an open file (pread, retried on EINTR; a short read is
// DATA_LOSS); `fd` must stay open while it is used.
ReadAt ReadFromFile(int fd);

}  // namespace kaizen::sandbox
