#include "server/auth/tls_files.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "server/auth/bounded_read.h"

namespace kaizen::auth {
namespace {

constexpr size_t kMaxPemBytes = 1 << 20;

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Bio = std::unique_ptr<BIO, BioFree>;

// The file's bytes in a memory BIO; `what` names the flag in errors.
absl::StatusOr<Bio> Load(const std::string& path, const char* what, std::string* keep) {
  absl::StatusOr<std::string> pem = ReadRegularFile(path, kMaxPemBytes);
  if (!pem.ok()) {
    return absl::Status(pem.status().code(), absl::StrCat(what, ": ", pem.status().message()));
  }
  *keep = *std::move(pem);
  Bio bio(BIO_new_mem_buf(keep->data(), static_cast<int>(keep->size())));
  if (!bio) return absl::ResourceExhaustedError("out of memory");
  return bio;
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
  std::string cert_pem, key_pem, ca_pem;
  absl::StatusOr<Bio> cert_bio = Load(files.cert, "--tls_cert", &cert_pem);
  if (!cert_bio.ok()) return cert_bio.status();
  std::unique_ptr<X509, X509Free> cert(
      PEM_read_bio_X509(cert_bio->get(), nullptr, nullptr, nullptr));
  if (!cert) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls_cert ", files.cert, " is not a PEM certificate: ", OpenSslError()));
  }
  absl::StatusOr<Bio> key_bio = Load(files.key, "--tls_key", &key_pem);
  if (!key_bio.ok()) return key_bio.status();
  std::unique_ptr<EVP_PKEY, KeyFree> key(
      PEM_read_bio_PrivateKey(key_bio->get(), nullptr, nullptr, nullptr));
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
    absl::StatusOr<Bio> ca_bio = Load(files.client_ca, "--tls_client_ca", &ca_pem);
    if (!ca_bio.ok()) return ca_bio.status();
    std::unique_ptr<X509, X509Free> ca(PEM_read_bio_X509(ca_bio->get(), nullptr, nullptr, nullptr));
    if (!ca) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--tls_client_ca ", files.client_ca, " holds no PEM certificate: ", OpenSslError()));
    }
  }
  return absl::OkStatus();
}

}  // namespace kaizen::auth
