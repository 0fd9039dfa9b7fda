// The server's TLS material on disk: its certificate chain and key, and for
// mutual TLS the CA that signs client certificates. gRPC reads the files
// itself (and re-reads them when they change, for rotation); this check runs
// first so that a bad file stops start-up with an error naming it instead of
// failing every handshake later.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace kaizen::auth {

struct TlsFiles {
  std::string cert;       // PEM certificate chain, the server's first
  std::string key;        // PEM private key of that certificate
  std::string client_ca;  // PEM CA bundle for client certificates; empty: no mTLS
};

// Each file exists and parses; the key belongs to the certificate; the CA
// file holds at least one certificate.
absl::Status CheckTlsFiles(const TlsFiles& files);

}  // namespace kaizen::auth
