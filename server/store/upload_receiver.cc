#include "server/store/upload_receiver.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/common/atomic_file.h"
#include "server/common/checked_math.h"
#include "server/common/status_macros.h"

namespace kaizen::store {

UploadReceiver::~UploadReceiver() {
  if (file_ != nullptr) std::fclose(file_);
  for (const std::string& p : paths_) std::remove(p.c_str());
}

absl::Status UploadReceiver::Start(
    const google::protobuf::RepeatedPtrField<kaizen::v1::UploadPart>& parts) {
  if (parts.size() != options_.expected_parts) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s header declares %d part(s); this format needs exactly %d",
                        options_.what, parts.size(), options_.expected_parts));
  }
  for (const kaizen::v1::UploadPart& p : parts) {
    if (p.size_bytes() <= 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s part \"%s\" declares size %d; parts must be non-empty", options_.what,
                          absl::CHexEscape(p.file_name()), p.size_bytes()));
    }
    // Checked: two parts near INT64_MAX would otherwise wrap to a small or
    // negative total that passes the limit below.
    const std::optional<int64_t> total = common::CheckedAdd(declared_, p.size_bytes());
    if (!total.has_value()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s part \"%s\" declares size_bytes %d; with the parts before it the total "
          "overflows a 64-bit size",
          options_.what, absl::CHexEscape(p.file_name()), p.size_bytes()));
    }
    declared_ = *total;
    names_.push_back(p.file_name().empty() ? absl::StrCat("part ", names_.size() + 1)
                                           : p.file_name());
    sizes_.push_back(p.size_bytes());
  }
  if (declared_ > options_.max_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("%s of %d bytes exceeds the limit of %d bytes", options_.what, declared_,
                        options_.max_bytes));
  }
  for (size_t i = 0; i < sizes_.size(); ++i) {
    std::string path = absl::StrCat(options_.tmp_dir, "/upload-", common::RandomHex(8), "-", i);
    FILE* f = std::fopen(path.c_str(), "wbx");
    if (f == nullptr) {
      return absl::InternalError(absl::StrCat("cannot create ", path, ": ", std::strerror(errno)));
    }
    std::fclose(f);
    paths_.push_back(std::move(path));
  }
  file_ = std::fopen(paths_[0].c_str(), "wb");
  if (file_ == nullptr) return absl::InternalError(absl::StrCat("cannot open ", paths_[0]));
  return absl::OkStatus();
}

absl::Status UploadReceiver::CloseCurrent() {
  if (file_ == nullptr) return absl::OkStatus();
  const bool ok = std::fflush(file_) == 0;
  std::fclose(file_);
  file_ = nullptr;
  if (!ok) return absl::InternalError(absl::StrCat("cannot write ", paths_[part_]));
  return absl::OkStatus();
}

absl::Status UploadReceiver::Append(absl::string_view bytes) {
  if (paths_.empty()) return absl::FailedPreconditionError("upload not started");
  if (received_ + static_cast<int64_t>(bytes.size()) > declared_) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s stream carries more bytes than the header's parts declare (%d)",
                        options_.what, declared_));
  }
  hasher_.Update(bytes);
  received_ += static_cast<int64_t>(bytes.size());
  while (!bytes.empty()) {
    const int64_t room = sizes_[part_] - part_received_;
    const size_t n = std::min<size_t>(bytes.size(), static_cast<size_t>(room));
    if (n > 0 && std::fwrite(bytes.data(), 1, n, file_) != n) {
      return absl::InternalError(
          absl::StrCat("cannot write ", paths_[part_], ": ", std::strerror(errno)));
    }
    bytes.remove_prefix(n);
    part_received_ += static_cast<int64_t>(n);
    if (part_received_ == sizes_[part_] && part_ + 1 < sizes_.size()) {
      RETURN_IF_ERROR(CloseCurrent());
      Publish(part_, part_received_);
      ++part_;
      part_received_ = 0;
      file_ = std::fopen(paths_[part_].c_str(), "wb");
      if (file_ == nullptr) return absl::InternalError(absl::StrCat("cannot open ", paths_[part_]));
    }
  }
  if (following_) {
    if (std::fflush(file_) != 0) {
      return absl::InternalError(
          absl::StrCat("cannot write ", paths_[part_], ": ", std::strerror(errno)));
    }
    Publish(part_, part_received_);
  }
  return absl::OkStatus();
}

void UploadReceiver::Publish(size_t i, int64_t bytes) {
  if (!following_) return;
  absl::MutexLock lock(&follow_mu_);
  visible_[i] = bytes;
}

std::function<absl::StatusOr<bool>(int64_t)> UploadReceiver::Follow(size_t i) {
  following_ = true;
  {
    absl::MutexLock lock(&follow_mu_);
    visible_.resize(sizes_.size(), 0);
  }
  return [this, i](int64_t have) -> absl::StatusOr<bool> {
    const auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(follow_mu_) {
      return abandoned_ || visible_[i] > have || visible_[i] == sizes_[i];
    };
    absl::MutexLock lock(&follow_mu_);
    follow_mu_.Await(absl::Condition(&ready));
    if (abandoned_) {
      return absl::CancelledError(
          absl::StrCat(options_.what, " ended before \"", names_[i], "\" was complete"));
    }
    return visible_[i] > have;
  };
}

absl::Status UploadReceiver::AwaitVerdict() {
  const auto decided = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(follow_mu_) {
    return verified_ || abandoned_;
  };
  absl::MutexLock lock(&follow_mu_);
  follow_mu_.Await(absl::Condition(&decided));
  if (abandoned_) {
    return absl::CancelledError(absl::StrCat(options_.what, " was not accepted"));
  }
  return absl::OkStatus();
}

void UploadReceiver::Abandon() {
  absl::MutexLock lock(&follow_mu_);
  abandoned_ = true;
}

absl::Status UploadReceiver::Finish(absl::string_view sha256_hex) {
  absl::Status checked = Check(sha256_hex);
  absl::MutexLock lock(&follow_mu_);
  (checked.ok() ? verified_ : abandoned_) = true;
  return checked;
}

absl::Status UploadReceiver::Check(absl::string_view sha256_hex) {
  RETURN_IF_ERROR(CloseCurrent());
  if (received_ < declared_) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s stream is truncated: received %d of %d declared bytes (\"%s\" is incomplete)",
        options_.what, received_, declared_, names_[part_]));
  }
  digest_ = hasher_.HexDigest();
  if (absl::AsciiStrToLower(sha256_hex) != digest_) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s sha256 mismatch: the client sent %s but the received bytes hash to %s",
                        options_.what, absl::CHexEscape(sha256_hex), digest_));
  }
  return absl::OkStatus();
}

}  // namespace kaizen::store
