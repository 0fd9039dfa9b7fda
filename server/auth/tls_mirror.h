// The TLS files gRPC actually reads. gRPC 1.51's file watcher re-reads the
// certificate and key it is given, and aborts the process on an empty key
// file (the middle of a non-atomic `cp`); a truncated or mismatched pair
// would fail every handshake. So gRPC watches a private copy instead, and a
// rotation reaches it only after the operator's files pass CheckTlsFiles:
// read once, checked, then renamed into place. A bad rotation leaves the
// last good files in force.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/auth/tls_files.h"

namespace kaizen::auth {

class TlsMirror {
 public:
  // Checks `source` and copies it into `dir` (which must exist, private to
  // this process).
  static absl::StatusOr<std::unique_ptr<TlsMirror>> Create(TlsFiles source, std::string dir);

  // The copies, for gRPC.
  const TlsFiles& mirrored() const { return mirrored_; }

  // Re-reads the operator's files: true when they changed and the new ones
  // are now in place, false when unchanged; an error (and the old files
  // stay) when the new ones do not pass the checks.
  absl::StatusOr<bool> Refresh();

 private:
  TlsMirror(TlsFiles source, std::string dir);

  TlsFiles source_;
  TlsFiles mirrored_;
  std::string dir_;
  // Of the sources last published.
  std::string digest_;
};

}  // namespace kaizen::auth
