// A machine-readable cause attached to an absl::Status as a payload, so that
// code far from where a failure happened (metrics labels, alerts) can tell
// failures apart without reading their free-text messages.
#pragma once

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace kaizen::common {

// Causes set by the server; a cause is a short snake_case token.
inline constexpr absl::string_view kCauseDiverged = "diverged";  // loss became NaN/Inf
inline constexpr absl::string_view kCauseAttemptsExhausted =
    "attempts_exhausted";  // the server died too often while a job ran

// `status` with `cause` attached (an OK status stays OK, without a cause).
absl::Status WithCause(absl::Status status, absl::string_view cause);
// The cause attached by WithCause, if any.
std::optional<std::string> CauseOf(const absl::Status& status);

}  // namespace kaizen::common
