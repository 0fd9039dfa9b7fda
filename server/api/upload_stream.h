// Drives a client-streaming upload (header, chunks, sha256 trailer) into a
// store's Upload object. Shared by UploadDataset and UploadModel, whose
// request messages have the same shape.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"

namespace kaizen::api {

// `begin(header)` returns StatusOr<std::unique_ptr<Upload>>; Upload has
// Append(bytes) and Finish(sha256) -> StatusOr<Result>.
template <typename Request, typename Result, typename BeginFn>
absl::StatusOr<Result> ReceiveUpload(grpc::ServerContext* context,
                                     grpc::ServerReader<Request>* reader, BeginFn begin,
                                     int64_t* bytes_received) {
  Request msg;
  if (!reader->Read(&msg)) {
    return absl::InvalidArgumentError("upload stream is empty; the first message must be a header");
  }
  if (msg.payload_case() != Request::kHeader) {
    return absl::InvalidArgumentError("the first message of an upload must be a header");
  }
  auto upload_or = begin(msg.header());
  if (!upload_or.ok()) return upload_or.status();
  auto upload = std::move(upload_or).value();
  *bytes_received = 0;
  while (reader->Read(&msg)) {
    switch (msg.payload_case()) {
      case Request::kChunk:
        *bytes_received += static_cast<int64_t>(msg.chunk().size());
        RETURN_IF_ERROR(upload->Append(msg.chunk()));
        break;
      case Request::kSha256: {
        Request extra;
        if (reader->Read(&extra)) {
          return absl::InvalidArgumentError("the sha256 trailer must be the last message");
        }
        return upload->Finish(msg.sha256());
      }
      case Request::kHeader:
        return absl::InvalidArgumentError("an upload carries exactly one header, first");
      default:
        return absl::InvalidArgumentError("upload message has no payload");
    }
  }
  if (context->IsCancelled()) return absl::CancelledError("the client cancelled the upload");
  return absl::InvalidArgumentError(
      absl::StrCat("upload stream is truncated: it ended after ", *bytes_received,
                   " bytes without the sha256 trailer"));
}

}  // namespace kaizen::api
