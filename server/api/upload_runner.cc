#include "server/api/upload_runner.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace kaizen::api {

UploadRunner::UploadRunner(Options options, metrics::Metrics* metrics)
    : options_(std::move(options)),
      metrics_(metrics),
      pool_(std::max(1, options_.max_concurrent)) {}

absl::Status UploadRunner::Admit() {
  absl::MutexLock lock(&mu_);
  if (in_progress_ >= options_.max_concurrent) {
    return absl::ResourceExhaustedError(absl::StrCat(
        in_progress_, " uploads are in progress and the limit is ", options_.max_concurrent,
        " (--max_concurrent_uploads); retry when one has finished"));
  }
  ++in_progress_;
  // Set under the lock so that the gauge never shows an older count last.
  if (metrics_ != nullptr) metrics_->SetUploadsInProgress(in_progress_);
  return absl::OkStatus();
}

void UploadRunner::Release() {
  absl::MutexLock lock(&mu_);
  --in_progress_;
  if (metrics_ != nullptr) metrics_->SetUploadsInProgress(in_progress_);
}

}  // namespace kaizen::api
