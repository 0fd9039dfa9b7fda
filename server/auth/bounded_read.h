// Reads an operator's file (tokens, certificates) safely: only a regular
// file (a FIFO would block the caller, the signal thread included), opened
// without blocking, and no more than a cap.
#pragma once

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"

namespace kaizen::auth {

// NOT_FOUND when it cannot be opened; INVALID_ARGUMENT when it is not a
// regular file or holds more than `max_bytes`.
absl::StatusOr<std::string> ReadRegularFile(const std::string& path, size_t max_bytes);

}  // namespace kaizen::auth
