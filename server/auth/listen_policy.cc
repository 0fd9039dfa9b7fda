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

bool IsProtected(const ListenSecurity& security) {
  return security.tls && (security.tokens || security.client_certificates);
}

std::string WhatIsUnprotected(const ListenSecurity& security) {
  if (IsProtected(security)) return "";
  if (!security.tls && !security.tokens) return "neither TLS nor bearer tokens are configured";
  if (!security.tls) return "bearer tokens without TLS would cross the network in clear text";
  return "TLS without bearer tokens (--tokens_file) or client certificates (--tls_client_ca) "
         "lets anyone call";
}

absl::StatusOr<std::string> ChooseListenHost(absl::string_view requested,
                                             const ListenSecurity& security) {
  if (requested.empty()) return std::string(IsProtected(security) ? "0.0.0.0" : "127.0.0.1");
  if (IsProtected(security) || security.insecure || IsLoopbackHost(requested)) {
    return std::string(requested);
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "refusing to listen on ", requested, ": ", WhatIsUnprotected(security),
      ". Off loopback the gRPC port needs TLS (--tls_cert, --tls_key) and bearer tokens "
      "(--tokens_file) or client certificates (--tls_client_ca); or pass --insecure to accept "
      "an open port (e.g. behind a NetworkPolicy)"));
}

}  // namespace kaizen::auth
