// Page sizes and opaque page tokens for List RPCs (AIP-158 style).
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/common/text_limits.h"

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

// What a List request asks for: how many rows, after which key.
struct PageRequest {
  int limit = kDefaultPageSize;  // ResolvePageSize
  std::string after_key;         // DecodePageToken; empty for the first page
};
// ResolvePageSize, then DecodePageToken; their errors.
absl::StatusOr<PageRequest> ResolvePageRequest(int page_size, absl::string_view page_token);

// Fills one page from `rows`, which the caller fetched with limit + 1 so
// that the extra row tells whether another page exists: at most `limit`
// rows, and no more once kMaxPageBytes are in the page (one row always), so
// that an answer stays far below gRPC's message limit. `add(row)` puts the
// row into the response (it may move from it) and returns its size in bytes
// or an error, which ends the page with that error; `key_of(row)` is the key
// the next page starts after. Returns the next_page_token: empty on the last
// page.
template <typename Row, typename Add, typename KeyOf>
absl::StatusOr<std::string> FillPage(std::vector<Row>& rows, int limit, Add add, KeyOf key_of,
                                     size_t max_page_bytes = kMaxPageBytes) {
  size_t bytes = 0;
  size_t taken = 0;
  std::string last_key;
  for (; taken < rows.size() && static_cast<int>(taken) < limit; ++taken) {
    if (taken > 0 && bytes >= max_page_bytes) break;
    last_key = key_of(rows[taken]);
    absl::StatusOr<size_t> added = add(rows[taken]);
    if (!added.ok()) return added.status();
    bytes += *added;
  }
  if (rows.size() > taken && taken > 0) return EncodePageToken(last_key);
  return std::string();
}

}  // namespace kaizen::common
