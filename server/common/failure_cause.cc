#include "server/common/failure_cause.h"

#include "absl/strings/cord.h"

namespace kaizen::common {
namespace {
constexpr absl::string_view kCauseUrl = "type.kaizen.dev/kaizen.FailureCause";
}  // namespace

absl::Status WithCause(absl::Status status, absl::string_view cause) {
  if (!status.ok()) status.SetPayload(kCauseUrl, absl::Cord(cause));
  return status;
}

std::optional<std::string> CauseOf(const absl::Status& status) {
  const auto payload = status.GetPayload(kCauseUrl);
  if (!payload) return std::nullopt;
  return std::string(*payload);
}

}  // namespace kaizen::common
