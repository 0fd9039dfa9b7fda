// Bearer-token checks: the tokens file parser and the authorization header of
// a call (the bytes any client sends). Input: a mode byte, then the bytes.
// Mode even: a tokens file; every entry it accepts must be well-formed and
// round-trip through TokenFileLine. Mode odd: an authorization header checked
// against a fixed table; only the real tokens may pass.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "fuzz/fuzz_util.h"
#include "server/auth/authenticator.h"
#include "server/auth/token_file.h"

namespace {

const kaizen::auth::Authenticator& Fixed() {
  static const kaizen::auth::Authenticator* auth = [] {
    const std::string path = absl::StrCat("/tmp/kaizen-bearer-fuzz-", getpid(), ".tokens");
    std::ofstream(path)
        << kaizen::auth::TokenFileLine("ops", kaizen::auth::Role::kAdmin, "admin-token") << "\n"
        << kaizen::auth::TokenFileLine("dash", kaizen::auth::Role::kReader, "reader-token") << "\n";
    kaizen::auth::Authenticator::Options options;
    options.tokens_file = path;
    auto created = kaizen::auth::Authenticator::Create(options);
    std::remove(path.c_str());
    if (!created.ok()) std::abort();
    return created->release();
  }();
  return *auth;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  const absl::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  if (mode % 2 == 0) {
    kaizen::auth::TokenFileLimits limits;
    limits.max_bytes = 4096;
    limits.max_tokens = 16;
    auto table = kaizen::auth::ParseTokenFile(bytes, "fuzz", limits);
    if (!table.ok()) return 0;
    kaizen::fuzz::Check(static_cast<int>(table->size()) <= limits.max_tokens);
    for (const auto& [hash, entry] : *table) {
      kaizen::fuzz::Check(hash.size() == 64);
      kaizen::fuzz::Check(kaizen::auth::IsValidTokenName(entry.name));
    }
    return 0;
  }
  const auto caller = Fixed().Authorize(bytes, "/kaizen.v1.DatasetService/DeleteDataset");
  if (caller.ok()) {
    // Only "Bearer admin-token" (any case of the scheme, spaces around the
    // token) gets through: the reader may not delete.
    kaizen::fuzz::Check(caller->name == "ops");
  }
  return 0;
}
