// Where the server may listen. Off loopback, a port is protected only with
// TLS and a way to tell callers apart (bearer tokens or client certificates):
// without TLS, tokens would cross the network in clear text; TLS alone lets
// anyone call. An unprotected server listens on loopback only unless the
// operator says --insecure; a protected one defaults to every address.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kaizen::auth {

struct ListenSecurity {
  bool tls = false;
  bool tokens = false;
  // TLS with a client CA: every caller presents a certificate.
  bool client_certificates = false;
  // The operator accepts an open port on a non-loopback address.
  bool insecure = false;
};

// 127.0.0.0/8, ::1 and "localhost", with or without IPv6 brackets.
bool IsLoopbackHost(absl::string_view host);

// The host of "host:port" or "[v6]:port".
std::string HostOfAddress(absl::string_view address);

// TLS, and tokens or client certificates.
bool IsProtected(const ListenSecurity& security);

// What is missing for IsProtected, in words; empty when nothing is.
std::string WhatIsUnprotected(const ListenSecurity& security);

// `requested` empty: 0.0.0.0 when protected, else 127.0.0.1. A non-loopback
// `requested` on an unprotected port is FAILED_PRECONDITION unless
// `insecure`.
absl::StatusOr<std::string> ChooseListenHost(absl::string_view requested,
                                             const ListenSecurity& security);

}  // namespace kaizen::auth
