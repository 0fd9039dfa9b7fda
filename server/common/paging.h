// Page sizes and opaque page tokens for List RPCs (AIP-158 style).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kaizen::common {

inline constexpr int kDefaultPageSize = 50;
inline constexpr int kMaxPageSize = 1000;

// 0 -> default; negative -> INVALID_ARGUMENT; capped at kMaxPageSize.
absl::StatusOr<int> ResolvePageSize(int requested);

// Tokens are web-safe base64 of the last key returned, so clients treat them
// as opaque and the server needs no cursor state.
std::string EncodePageToken(absl::string_view last_key);
// Empty token -> empty key. INVALID_ARGUMENT on a token this server did not issue.
absl::StatusOr<std::string> DecodePageToken(absl::string_view token);

}  // namespace kaizen::common
