#include "server/common/paging.h"

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"

namespace kaizen::common {
namespace {
constexpr absl::string_view kTokenPrefix = "kz1:";
}

absl::StatusOr<int> ResolvePageSize(int requested) {
  if (requested < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size is ", requested, "; it must be >= 0"));
  }
  if (requested == 0) return kDefaultPageSize;
  return std::min(requested, kMaxPageSize);
}

std::string EncodePageToken(absl::string_view last_key) {
  return absl::WebSafeBase64Escape(absl::StrCat(kTokenPrefix, last_key));
}

absl::StatusOr<std::string> DecodePageToken(absl::string_view token) {
  if (token.empty()) return std::string();
  std::string raw;
  if (!absl::WebSafeBase64Unescape(token, &raw) || !absl::StartsWith(raw, kTokenPrefix)) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_token \"", absl::CHexEscape(token),
                     "\" is not a token this server issued; pass next_page_token unchanged"));
  }
  return raw.substr(kTokenPrefix.size());
}

absl::StatusOr<PageRequest> ResolvePageRequest(int page_size, absl::string_view page_token) {
  PageRequest page;
  ASSIGN_OR_RETURN(page.limit, ResolvePageSize(page_size));
  ASSIGN_OR_RETURN(page.after_key, DecodePageToken(page_token));
  return page;
}

}  // namespace kaizen::common
