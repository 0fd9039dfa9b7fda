#include "server/auth/tls_files.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cstdio>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace kaizen::auth {
namespace {

struct FileCloser {
  void operator()(FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<FILE, FileCloser>;
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};

absl::StatusOr<File> Open(const std::string& path, const char* what) {
  File f(std::fopen(path.c_str(), "rb"));
  if (!f) return absl::NotFoundError(absl::StrCat("cannot open the ", what, " ", path));
  return f;
}

std::string OpenSslError() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "no PEM block found";
  char buf[256];
  ERR_error_string_n(code, buf, sizeof(buf));
  return buf;
}

}  // namespace

absl::Status CheckTlsFiles(const TlsFiles& files) {
  if (files.cert.empty() != files.key.empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  }
  if (files.cert.empty()) {
    if (!files.client_ca.empty()) {
      return absl::InvalidArgumentError("--tls_client_ca needs --tls_cert and --tls_key");
    }
    return absl::OkStatus();
  }
  ERR_clear_error();
  absl::StatusOr<File> cert_file = Open(files.cert, "certificate (--tls_cert)");
  if (!cert_file.ok()) return cert_file.status();
  std::unique_ptr<X509, X509Free> cert(PEM_read_X509(cert_file->get(), nullptr, nullptr, nullptr));
  if (!cert) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls_cert ", files.cert, " is not a PEM certificate: ", OpenSslError()));
  }
  absl::StatusOr<File> key_file = Open(files.key, "private key (--tls_key)");
  if (!key_file.ok()) return key_file.status();
  std::unique_ptr<EVP_PKEY, KeyFree> key(
      PEM_read_PrivateKey(key_file->get(), nullptr, nullptr, nullptr));
  if (!key) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls_key ", files.key, " is not an unencrypted PEM private key: ", OpenSslError()));
  }
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls_key ", files.key, " does not belong to the certificate in ", files.cert));
  }
  if (!files.client_ca.empty()) {
    absl::StatusOr<File> ca_file = Open(files.client_ca, "client CA (--tls_client_ca)");
    if (!ca_file.ok()) return ca_file.status();
    std::unique_ptr<X509, X509Free> ca(PEM_read_X509(ca_file->get(), nullptr, nullptr, nullptr));
    if (!ca) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--tls_client_ca ", files.client_ca, " holds no PEM certificate: ", OpenSslError()));
    }
  }
  return absl::OkStatus();
}

}  // namespace kaizen::auth
