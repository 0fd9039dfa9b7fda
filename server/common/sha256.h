// Incremental SHA-256 (OpenSSL's EVP API) for verifying uploads.
#pragma once

#include <memory>
#include <string>

#include "absl/strings/string_view.h"

namespace kaizen::common {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(absl::string_view data);
  void Update(const void* data, size_t size);
  // Lower-case hex digest. The hasher must not be used afterwards.
  std::string HexDigest();

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

// Convenience one-shot digest.
std::string Sha256Hex(absl::string_view data);

}  // namespace kaizen::common
