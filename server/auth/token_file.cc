#include "server/auth/token_file.h"

#include <sys/random.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/common/sha256.h"

namespace kaizen::auth {
namespace {

constexpr absl::string_view kHashPrefix = "sha256:";
constexpr size_t kMaxLine = 512;

bool IsLowerHex(absl::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

bool IsValidTokenName(absl::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-' &&
        c != '@') {
      return false;
    }
  }
  return true;
}

std::string HashToken(absl::string_view token) { return common::Sha256Hex(token); }

std::string TokenFileLine(absl::string_view name, Role role, absl::string_view token) {
  return absl::StrCat(name, " ", RoleName(role), " ", kHashPrefix, HashToken(token));
}

absl::StatusOr<std::string> GenerateToken() {
  unsigned char bytes[32];
  size_t got = 0;
  while (got < sizeof(bytes)) {
    ssize_t n = getrandom(bytes + got, sizeof(bytes) - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(absl::StrCat("getrandom: ", std::strerror(errno)));
    }
    got += static_cast<size_t>(n);
  }
  return absl::StrCat(
      "kzn_", absl::WebSafeBase64Escape(absl::string_view(reinterpret_cast<char*>(bytes), got)));
}

absl::StatusOr<TokenTable> ParseTokenFile(absl::string_view text, absl::string_view path,
                                          const TokenFileLimits& limits) {
  if (static_cast<int64_t>(text.size()) > limits.max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("tokens file ", path, " is ", text.size(),
                                                   " bytes; the limit is ", limits.max_bytes));
  }
  TokenTable table;
  absl::flat_hash_map<std::string, int> names;  // name -> line
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    auto where = [&] { return absl::StrCat("tokens file ", path, " line ", line_no); };
    if (line.size() > kMaxLine) {
      return absl::InvalidArgumentError(
          absl::StrCat(where(), " is ", line.size(), " bytes; the limit is ", kMaxLine));
    }
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line.front() == '#') continue;
    std::vector<absl::string_view> fields = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    if (fields.size() != 3) {
      return absl::InvalidArgumentError(
          absl::StrCat(where(), " has ", fields.size(), " fields; expected NAME ROLE sha256:HEX"));
    }
    const absl::string_view name = fields[0];
    if (!IsValidTokenName(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where(), ": a token name is 1-64 of [A-Za-z0-9._@-]"));
    }
    absl::StatusOr<Role> role = ParseRole(fields[1]);
    if (!role.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(where(), ": ", role.status().message()));
    }
    absl::string_view hash = fields[2];
    if (!absl::ConsumePrefix(&hash, kHashPrefix) || hash.size() != 64 || !IsLowerHex(hash)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where(),
                       ": the third field must be sha256: and 64 lower-case hex digits (the hash "
                       "of the token, never the token itself; kaizenctl tokens add writes it)"));
    }
    if (auto [it, added] = names.emplace(std::string(name), line_no); !added) {
      return absl::InvalidArgumentError(absl::StrCat(where(), ": token name \"", name,
                                                     "\" is used on line ", it->second, " too"));
    }
    if (!table.emplace(std::string(hash), TokenEntry{std::string(name), *role}).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(where(), ": the same token hash appears on an earlier line"));
    }
    if (static_cast<int>(table.size()) > limits.max_tokens) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokens file ", path, " has more than ", limits.max_tokens, " tokens"));
    }
  }
  return table;
}

}  // namespace kaizen::auth
