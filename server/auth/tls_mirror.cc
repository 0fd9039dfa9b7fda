#include "server/auth/tls_mirror.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/auth/bounded_read.h"
#include "server/common/atomic_file.h"
#include "server/common/sha256.h"

namespace kaizen::auth {
namespace {
// PEM certificates and keys are a few KiB; a bundle of CAs a few hundred.
constexpr size_t kMaxPemBytes = 1 << 20;
}  // namespace

TlsMirror::TlsMirror(TlsFiles source, std::string dir)
    : source_(std::move(source)), dir_(std::move(dir)) {
  mirrored_.cert = dir_ + "/tls.crt";
  mirrored_.key = dir_ + "/tls.key";
  if (!source_.client_ca.empty()) mirrored_.client_ca = dir_ + "/client-ca.crt";
}

absl::StatusOr<std::unique_ptr<TlsMirror>> TlsMirror::Create(TlsFiles source, std::string dir) {
  // Errors name the operator's files.
  if (absl::Status checked = CheckTlsFiles(source); !checked.ok()) return checked;
  std::unique_ptr<TlsMirror> self(new TlsMirror(std::move(source), std::move(dir)));
  absl::StatusOr<bool> published = self->Refresh();
  if (!published.ok()) return published.status();
  return self;
}

absl::StatusOr<bool> TlsMirror::Refresh() {
  // Read each file once; everything after works on these bytes.
  std::string pems[3];
  const std::string* sources[3] = {&source_.cert, &source_.key, &source_.client_ca};
  common::Sha256 digest;
  for (int i = 0; i < 3; ++i) {
    if (sources[i]->empty()) continue;
    absl::StatusOr<std::string> pem = ReadRegularFile(*sources[i], kMaxPemBytes);
    if (!pem.ok()) return pem.status();
    pems[i] = *std::move(pem);
    digest.Update(absl::StrCat(pems[i].size(), ":"));
    digest.Update(pems[i]);
  }
  std::string now = digest.HexDigest();
  if (now == digest_) return false;
  // Check the bytes as they will be published, under staging names.
  TlsFiles staged;
  staged.cert = dir_ + "/staging.crt";
  staged.key = dir_ + "/staging.key";
  if (!source_.client_ca.empty()) staged.client_ca = dir_ + "/staging-ca.crt";
  const std::string* staged_paths[3] = {&staged.cert, &staged.key, &staged.client_ca};
  for (int i = 0; i < 3; ++i) {
    if (staged_paths[i]->empty()) continue;
    if (absl::Status w = common::WriteFileAtomically(*staged_paths[i], pems[i]); !w.ok()) return w;
  }
  if (absl::Status checked = CheckTlsFiles(staged); !checked.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the TLS files (", source_.cert, ", ", source_.key,
                     source_.client_ca.empty() ? "" : absl::StrCat(", ", source_.client_ca),
                     ") do not pass the checks: ", checked.message()));
  }
  // The key first: gRPC may read between the renames, and an old
  // certificate with a new key fails handshakes until its next read, while
  // nothing is ever empty or half-written.
  const std::string* published[3] = {&mirrored_.key, &mirrored_.cert, &mirrored_.client_ca};
  const std::string* from[3] = {&staged.key, &staged.cert, &staged.client_ca};
  for (int i = 0; i < 3; ++i) {
    if (from[i]->empty()) continue;
    if (absl::Status r = common::DurableRename(*from[i], *published[i]); !r.ok()) return r;
  }
  digest_ = std::move(now);
  return true;
}

}  // namespace kaizen::auth
