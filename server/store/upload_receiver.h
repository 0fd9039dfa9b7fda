// Receives the byte stream of a multi-part upload into temporary files, one
// per declared part, enforcing the size limit and verifying the SHA-256
// trailer. Temporary files are removed when the receiver is destroyed, so a
// failed or abandoned upload leaves nothing behind.
//
// Another thread may read a part while it arrives (Follow), to decode an
// upload as it streams; it then waits for the SHA-256 verdict
// (AwaitVerdict) before it stores anything.
#pragma once

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
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
  // Checks that every declared byte arrived and that `sha256_hex` matches;
  // a failure abandons the upload (below).
  absl::Status Finish(absl::string_view sha256_hex);

  // For a reader on another thread, made after Start() and before the first
  // Append (GzipReader::Growing): waits until part `i` holds more than `have`
  // bytes (true) or is complete with `have` (false). CANCELLED once the
  // upload is abandoned. Appends then flush every chunk to the part's file
  // before they report it.
  std::function<absl::StatusOr<bool>(int64_t have)> Follow(size_t i);
  // Waits until Finish() accepted the upload (OK) or it was abandoned
  // (CANCELLED).
  absl::Status AwaitVerdict();
  // Ends every wait above, now and later, with CANCELLED: the upload failed
  // or was dropped. The owner calls it before it joins a reader.
  void Abandon();

  // Valid after Start(): one temporary file per part, in order, and each
  // part's declared size (the files are complete after Finish()).
  const std::vector<std::string>& part_paths() const { return paths_; }
  const std::vector<std::string>& part_names() const { return names_; }
  const std::vector<int64_t>& part_sizes() const { return sizes_; }
  int64_t total_bytes() const { return received_; }
  const std::string& sha256() const { return digest_; }

 private:
  absl::Status CloseCurrent();
  // Finish() without the verdict.
  absl::Status Check(absl::string_view sha256_hex);
  // Tells followers that part `i` holds `bytes` bytes in its file.
  void Publish(size_t i, int64_t bytes);

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

  bool following_ = false;  // set by Follow(), before the first Append
  absl::Mutex follow_mu_;
  std::vector<int64_t> visible_ ABSL_GUARDED_BY(follow_mu_);  // bytes per part, flushed
  bool verified_ ABSL_GUARDED_BY(follow_mu_) = false;
  bool abandoned_ ABSL_GUARDED_BY(follow_mu_) = false;
};

}  // namespace kaizen::store
