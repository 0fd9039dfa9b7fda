#include "server/auth/authenticator.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/auth/bounded_read.h"

namespace kaizen::auth {
namespace {
// A bearer header longer than this is not one of ours; it is not hashed.
constexpr size_t kMaxAuthorizationBytes = 4096;

}  // namespace

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::Create(Options options) {
  std::unique_ptr<Authenticator> self(new Authenticator(std::move(options)));
  if (self->enabled()) {
    absl::StatusOr<std::shared_ptr<const TokenTable>> tokens = self->Load();
    if (!tokens.ok()) return tokens.status();
    absl::MutexLock lock(&self->mu_);
    self->tokens_ = *std::move(tokens);
  }
  return self;
}

absl::StatusOr<std::shared_ptr<const TokenTable>> Authenticator::Load() const {
  absl::StatusOr<std::string> text =
      ReadRegularFile(options_.tokens_file, static_cast<size_t>(options_.limits.max_bytes));
  if (!text.ok()) {
    return absl::Status(text.status().code(),
                        absl::StrCat("tokens file: ", text.status().message()));
  }
  absl::StatusOr<TokenTable> table = ParseTokenFile(*text, options_.tokens_file, options_.limits);
  if (!table.ok()) return table.status();
  return std::make_shared<const TokenTable>(*std::move(table));
}

absl::Status Authenticator::Reload() {
  if (!enabled()) return absl::OkStatus();
  absl::StatusOr<std::shared_ptr<const TokenTable>> tokens = Load();
  if (!tokens.ok()) return tokens.status();
  absl::MutexLock lock(&mu_);
  tokens_ = *std::move(tokens);
  return absl::OkStatus();
}

int Authenticator::token_count() const {
  absl::MutexLock lock(&mu_);
  return tokens_ ? static_cast<int>(tokens_->size()) : 0;
}

absl::StatusOr<Caller> Authenticator::Authorize(std::optional<absl::string_view> authorization,
                                                absl::string_view full_method) const {
  absl::StatusOr<Caller> caller = Identify(authorization);
  if (!caller.ok()) return caller.status();
  absl::Status permitted = Permit(*caller, full_method);
  if (!permitted.ok()) return permitted;
  return caller;
}

absl::StatusOr<Caller> Authenticator::Identify(
    std::optional<absl::string_view> authorization) const {
  if (!enabled()) return Caller{};
  if (!authorization.has_value() || authorization->empty()) {
    return absl::UnauthenticatedError(
        "this server needs a bearer token: send the metadata \"authorization: Bearer TOKEN\" "
        "(kaizenctl: --token or $KAIZEN_TOKEN)");
  }
  absl::string_view value = *authorization;
  if (value.size() > kMaxAuthorizationBytes) {
    return absl::UnauthenticatedError(absl::StrCat("the authorization metadata is ", value.size(),
                                                   " bytes; no token is that long"));
  }
  if (value.size() < 7 || !absl::EqualsIgnoreCase(value.substr(0, 7), "bearer ")) {
    return absl::UnauthenticatedError("the authorization metadata must be \"Bearer TOKEN\"");
  }
  absl::string_view token = absl::StripAsciiWhitespace(value.substr(7));
  if (token.empty()) return absl::UnauthenticatedError("the bearer token is empty");
  std::shared_ptr<const TokenTable> tokens;
  {
    absl::MutexLock lock(&mu_);
    tokens = tokens_;
  }
  auto it = tokens->find(HashToken(token));
  if (it == tokens->end()) {
    return absl::UnauthenticatedError("unknown or revoked bearer token");
  }
  return Caller{it->second.name, it->second.role};
}

absl::Status Authenticator::Permit(const Caller& caller, absl::string_view full_method) const {
  if (!enabled() || RoleAllows(caller.role, full_method)) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat("role \"", RoleName(caller.role), "\" (token \"",
                                                  caller.name, "\") may not call ", full_method));
}

}  // namespace kaizen::auth
