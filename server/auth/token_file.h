// The bearer-token file: one token per line as `NAME ROLE sha256:HEX`, where
// HEX is the SHA-256 of the token (the token itself is never stored on the
// server). Blank lines and lines starting with '#' are ignored. The file is
// operator input but is parsed with the same budgets as network input: a
// size cap, a line cap and checked fields, each error naming the line.
#pragma once

#include <cstdint>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/auth/roles.h"

namespace kaizen::auth {

struct TokenEntry {
  std::string name;
  Role role;
};

struct TokenFileLimits {
  int64_t max_bytes = 1 << 20;
  int max_tokens = 10'000;
};

// Keyed by the lower-case hex SHA-256 of the token.
using TokenTable = absl::flat_hash_map<std::string, TokenEntry>;

// `path` only names the file in errors.
absl::StatusOr<TokenTable> ParseTokenFile(absl::string_view text, absl::string_view path,
                                          const TokenFileLimits& limits = {});

// The line to put in a tokens file for `token`.
std::string TokenFileLine(absl::string_view name, Role role, absl::string_view token);

// Lower-case hex SHA-256 of the token.
std::string HashToken(absl::string_view token);

// A new random token: "kzn_" and 43 URL-safe base64 characters (256 bits).
absl::StatusOr<std::string> GenerateToken();

// Whether `name` may name a token: 1-64 of [A-Za-z0-9._@-].
bool IsValidTokenName(absl::string_view name);

}  // namespace kaizen::auth
