// Who is calling and may they: checks the bearer token of each call against
// the tokens file (see token_file.h) and the caller's role against the
// method (see roles.h). Without a tokens file every call is allowed. Reload()
// swaps in a re-read file atomically (SIGHUP); calls in flight keep the table
// they started with, and a bad file leaves the old one in place.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "server/auth/roles.h"
#include "server/auth/token_file.h"

namespace kaizen::auth {

struct Caller {
  // The token's name from the tokens file; empty when tokens are off.
  std::string name;
  Role role = Role::kAdmin;
};

class Authenticator {
 public:
  struct Options {
    // Empty: no tokens, every call allowed.
    std::string tokens_file;
    TokenFileLimits limits;
  };

  static absl::StatusOr<std::unique_ptr<Authenticator>> Create(Options options);

  // Whether calls need a token.
  bool enabled() const { return !options_.tokens_file.empty(); }
  // Re-reads the tokens file; on an error the tokens in force stay.
  absl::Status Reload();
  int token_count() const;

  // `authorization` is the call's "authorization" metadata, if any.
  // UNAUTHENTICATED for a missing, malformed or unknown token;
  // PERMISSION_DENIED naming the role and the method when the role may not
  // call `full_method`.
  absl::StatusOr<Caller> Authorize(std::optional<absl::string_view> authorization,
                                   absl::string_view full_method) const;
  // The two halves of Authorize: who is calling (UNAUTHENTICATED when
  // unknown), and may they call `full_method` (PERMISSION_DENIED).
  absl::StatusOr<Caller> Identify(std::optional<absl::string_view> authorization) const;
  absl::Status Permit(const Caller& caller, absl::string_view full_method) const;

 private:
  explicit Authenticator(Options options) : options_(std::move(options)) {}
  absl::StatusOr<std::shared_ptr<const TokenTable>> Load() const;

  Options options_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const TokenTable> tokens_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kaizen::auth
