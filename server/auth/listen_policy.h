// Where the server may listen. A server with neither TLS nor bearer tokens
// answers anyone who reaches its port, so it listens on loopback only unless
// the operator says --insecure; with either, the default is every address.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kaizen::auth {

struct ListenSecurity {
  bool tls = false;
  bool tokens = false;
  // The operator accepts an open port on a non-loopback address.
  bool insecure = false;
};

// 127.0.0.0/8, ::1 and "localhost", with or without IPv6 brackets.
bool IsLoopbackHost(absl::string_view host);

// The host of "host:port" or "[v6]:port".
std::string HostOfAddress(absl::string_view address);

// `requested` empty: 127.0.0.1 without TLS and tokens, 0.0.0.0 with either.
// A non-loopback `requested` without TLS or tokens is FAILED_PRECONDITION
// unless `insecure`.
absl::StatusOr<std::string> ChooseListenHost(absl::string_view requested,
                                             const ListenSecurity& security);

}  // namespace kaizen::auth
