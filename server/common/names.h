// Validation of user-chosen resource names (datasets, models). Names become
// parts of file names, so anything that could traverse paths is refused.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace kaizen::common {

inline constexpr int kMaxNameLength = 128;

// OK when `name` matches [a-z0-9][a-z0-9._-]* and is at most 128 characters;
// otherwise INVALID_ARGUMENT naming `field` and the offending character.
absl::Status ValidateName(absl::string_view field, absl::string_view name);

// Splits "name[:version]"; version 0 when absent. INVALID_ARGUMENT on a
// malformed version.
absl::Status ParseModelRef(absl::string_view ref, std::string* name, int64_t* version);

}  // namespace kaizen::common
