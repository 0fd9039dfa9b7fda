// Receives the byte stream of a multi-part upload into temporary files, one
// per declared part, enforcing the size limit and verifying the SHA-256
// trailer. Temporary files are removed when the receiver is destroyed, so a
// failed or abandoned upload leaves nothing behind.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/repeated_field.h"
#include "kaizen/v1/common.pb.h"
#include "server/common/sha256.h"

namespace kaizen::store {

class UploadReceiver {
 public:
  struct Options {
    // Folder for the temporary part files.
    std::string tmp_dir;
    // Largest total upload accepted (RESOURCE_EXHAUSTED beyond).
    int64_t max_bytes = int64_t{4} << 30;
    // Parts the upload must declare, e.g. 1 for an archive, 2 for IDX.
    int expected_parts = 1;
    // Used in messages: "dataset upload", "model upload".
    std::string what = "upload";
  };

  explicit UploadReceiver(Options options) : options_(std::move(options)) {}
  ~UploadReceiver();
  UploadReceiver(const UploadReceiver&) = delete;
  UploadReceiver& operator=(const UploadReceiver&) = delete;

  // Validates the declared parts and opens their temporary files.
  absl::Status Start(const google::protobuf::RepeatedPtrField<kaizen::v1::UploadPart>& parts);
  // Appends stream bytes, splitting them across parts.
  absl::Status Append(absl::string_view bytes);
  // Checks that every declared byte arrived and that `sha256_hex` matches.
  absl::Status Finish(absl::string_view sha256_hex);

  // Valid after Finish(): one temporary file per part, in order.
  const std::vector<std::string>& part_paths() const { return paths_; }
  const std::vector<std::string>& part_names() const { return names_; }
  int64_t total_bytes() const { return received_; }
  const std::string& sha256() const { return digest_; }

 private:
  absl::Status CloseCurrent();

  Options options_;
  std::vector<std::string> paths_;
  std::vector<std::string> names_;
  std::vector<int64_t> sizes_;
  int64_t declared_ = 0;
  int64_t received_ = 0;
  size_t part_ = 0;
  int64_t part_received_ = 0;
  FILE* file_ = nullptr;
  common::Sha256 hasher_;
  std::string digest_;
};

}  // namespace kaizen::store
