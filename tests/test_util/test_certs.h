// Certificates for TLS tests, made on the spot with the openssl command: a
// CA, a server certificate for localhost and 127.0.0.1, a client certificate
// from that CA, and a second, unrelated CA with a client certificate of its
// own (which the server must refuse).
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace kaizen::test_util {

struct TestCerts {
  std::string ca_cert;
  std::string server_cert;
  std::string server_key;
  std::string client_cert;
  std::string client_key;
  std::string other_ca_cert;
  std::string other_client_cert;
  std::string other_client_key;
  // A server certificate (localhost, 127.0.0.1) from the other CA.
  std::string other_server_cert;
  std::string other_server_key;
};

// Writes everything under `dir` (which must exist); the fields are paths.
absl::StatusOr<TestCerts> MakeTestCerts(const std::string& dir);

// The file's contents, or "" when it cannot be read.
std::string ReadText(const std::string& path);

}  // namespace kaizen::test_util
