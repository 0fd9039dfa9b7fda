// The checks an uploaded TorchScript archive passes before LibTorch reads a
// byte of it: the ZIP structure and declared sizes (zip_directory.h), the
// members LibTorch needs, and every pickle in it (pickle_scanner.h).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "server/sandbox/pickle_scanner.h"
#include "server/sandbox/zip_directory.h"

namespace kaizen::sandbox {

struct TorchScriptLimits {
  ZipLimits zip;
  PickleLimits pickle;
  // Largest pickle member (data.pkl, constants.pkl, code/*.debug_pkl) read
  // and scanned; the tensors themselves are not pickles.
  int64_t max_pickle_bytes = int64_t{64} << 20;
  // Largest extra/kaizen.json.
  int64_t max_metadata_bytes = 1 << 20;
};

// Checks the archive `archive_size` bytes long behind `read`. OK or
// INVALID_ARGUMENT saying what is wrong and in which member.
absl::Status PrecheckTorchScriptArchive(uint64_t archive_size, const ReadAt& read,
                                        const TorchScriptLimits& limits);

// The same for a file (NOT_FOUND when it cannot be opened).
absl::Status PrecheckTorchScriptFile(const std::string& path, const TorchScriptLimits& limits);

}  // namespace kaizen::sandbox
