#include "server/models/model_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/common/atomic_file.h"
#include "server/common/sha256.h"
#include "server/common/status_macros.h"
#include "server/models/torch_errors.h"

namespace kaizen::models {
namespace {

absl::Status ErrnoError(absl::string_view what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

absl::Status SyncFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("opening", path);
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return ErrnoError("fsync", path);
  return absl::OkStatus();
}

std::string DirectoryOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

absl::Status SaveModelFile(const torch::jit::Module& module, const kaizen::v1::Model& metadata,
                           const std::string& path, std::string_view tokenizer) {
  if (metadata.has_text_input() != !tokenizer.empty()) {
    return absl::InvalidArgumentError(
        metadata.has_text_input()
            ? absl::StrCat("text model ", path, " needs its tokenizer file")
            : absl::StrCat("model ", path,
                           " is not a text model (no text_input) but was given a "
                           "tokenizer file"));
  }
  if (metadata.has_text_input()) {
    const std::string digest =
        common::Sha256Hex(absl::string_view(tokenizer.data(), tokenizer.size()));
    if (digest != metadata.text_input().tokenizer_sha256()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the tokenizer file's SHA-256 is ", digest, " but text_input.tokenizer_sha256 says '",
          metadata.text_input().tokenizer_sha256(), "'"));
    }
  }
  ASSIGN_OR_RETURN(std::string json, ModelToMetadataJson(metadata));
  const std::string tmp = absl::StrCat(path, ".tmp-", common::RandomHex(8));
  torch::jit::ExtraFilesMap extra_files;
  extra_files.emplace(std::string(kMetadataFileName), std::move(json));
  if (!tokenizer.empty())
    extra_files.emplace(std::string(kTokenizerFileName), std::string(tokenizer));
  try {
    module.save(tmp, extra_files);
  } catch (const std::exception& e) {
    std::remove(tmp.c_str());
    return absl::InternalError(absl::StrCat("saving model to ", path, ": ", TorchErrorSummary(e)));
  }
  absl::Status status = SyncFile(tmp);
  if (status.ok() && std::rename(tmp.c_str(), path.c_str()) != 0) {
    status = ErrnoError("renaming onto", path);
  }
  if (!status.ok()) {
    std::remove(tmp.c_str());
    return status;
  }
  return common::SyncDirectory(DirectoryOf(path));
}

}  // namespace kaizen::models
