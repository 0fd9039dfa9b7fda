#include "server/models/model_metadata.h"

#include <caffe2/serialize/inline_container.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <exception>
#include <tuple>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "server/models/torch_errors.h"
#include "server/sandbox/zip_directory.h"

namespace kaizen::models {

absl::StatusOr<std::string> ModelToMetadataJson(const kaizen::v1::Model& model) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  auto status = google::protobuf::util::MessageToJsonString(model, &json, options);
  if (!status.ok()) {
    return absl::InternalError(
        absl::StrCat("encoding model metadata as JSON: ", status.ToString()));
  }
  return json;
}

absl::StatusOr<kaizen::v1::Model> ModelFromMetadataJson(absl::string_view json) {
  kaizen::v1::Model model;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  // A std::string converts to the argument type of every protobuf version
  // (StringPiece in 3.x, absl::string_view later).
  auto status = google::protobuf::util::JsonStringToMessage(std::string(json), &model, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(kMetadataFileName, " does not parse: ", status.ToString()));
  }
  return model;
}

absl::StatusOr<kaizen::v1::Model> ReadModelMetadata(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("no such model file: ", path));
  }
  std::string json;
  try {
    // Reads only the zip directory and the one record, not the weights.
    caffe2::serialize::PyTorchStreamReader reader(path);
    const std::string record = absl::StrCat("extra/", kMetadataFileName);
    if (!reader.hasRecord(record)) {
      return absl::NotFoundError(absl::StrCat(path, " has no ", kMetadataFileName));
    }
    at::DataPtr data;
    size_t size = 0;
    std::tie(data, size) = reader.getRecord(record);
    json.assign(static_cast<const char*>(data.get()), size);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a TorchScript file: ", path, ": ", TorchErrorSummary(e)));
  }
  return ModelFromMetadataJson(json);
}

absl::StatusOr<std::string> ReadModelTokenizer(const std::string& path, int64_t max_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat("no such model file: ", path));
  absl::Cleanup close_fd = [fd] { ::close(fd); };
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
  }
  // The archive's directory through the checked reader: the member's size is
  // known (and bounded) before a byte of it is read.
  const sandbox::ReadAt read = sandbox::ReadFromFile(fd);
  absl::StatusOr<std::vector<sandbox::ZipMember>> members =
      sandbox::ReadZipDirectory(static_cast<uint64_t>(st.st_size), read, sandbox::ZipLimits{});
  if (!members.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a TorchScript file: ", path, ": ", members.status().message()));
  }
  // TorchScript names members "<archive>/extra/<name>".
  const std::string suffix = absl::StrCat("/extra/", kTokenizerFileName);
  for (const sandbox::ZipMember& m : *members) {
    const size_t slash = m.name.find('/');
    if (slash == std::string::npos || m.name.compare(slash, std::string::npos, suffix) != 0) {
      continue;
    }
    if (m.uncompressed_size > static_cast<uint64_t>(max_bytes)) {
      return absl::ResourceExhaustedError(absl::StrCat(path, ": its ", kTokenizerFileName, " is ",
                                                       m.uncompressed_size,
                                                       " bytes, over the limit of ", max_bytes));
    }
    return sandbox::ReadZipMember(m, read, max_bytes);
  }
  return absl::NotFoundError(absl::StrCat(path, " has no ", kTokenizerFileName));
}

}  // namespace kaizen::models
