#include "server/auth/listen_policy.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace kaizen::auth {

bool IsLoopbackHost(absl::string_view host) {
  if (absl::StartsWith(host, "[") && absl::EndsWith(host, "]")) {
    host = host.substr(1, host.size() - 2);
  }
  if (host == "localhost" || host == "::1") return true;
  std::vector<absl::string_view> octets = absl::StrSplit(host, '.');
  if (octets.size() != 4 || octets[0] != "127") return false;
  for (absl::string_view o : octets) {
    int v = 0;
    if (o.empty() || o.size() > 3 || !absl::SimpleAtoi(o, &v) || v < 0 || v > 255) return false;
  }
  return true;
}

std::string HostOfAddress(absl::string_view address) {
  if (absl::StartsWith(address, "[")) {
    const size_t end = address.find(']');
    if (end != absl::string_view::npos) return std::string(address.substr(0, end + 1));
  }
  const size_t colon = address.rfind(':');
  return std::string(colon == absl::string_view::npos ? address : address.substr(0, colon));
}

absl::StatusOr<std::string> ChooseListenHost(absl::string_view requested,
                                             const ListenSecurity& security) {
  const bool protected_port = security.tls || security.tokens;
  if (requested.empty()) return std::string(protected_port ? "0.0.0.0" : "127.0.0.1");
  if (protected_port || security.insecure || IsLoopbackHost(requested)) {
    return std::string(requested);
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "refusing to listen on ", requested,
      " with neither TLS (--tls_cert, --tls_key) nor bearer tokens (--tokens_file): anyone who "
      "reaches the port could upload, delete and train. Configure one, or pass --insecure to "
      "accept an open port (e.g. behind a NetworkPolicy)"));
}

}  // namespace kaizen::auth
