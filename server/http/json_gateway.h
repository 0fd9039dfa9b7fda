// The JSON face of the v1 API. Every method of the kaizen.v1 services gets
// the route "/api/<full gRPC method name>" (e.g.
// "/api/kaizen.v1.FineTuneService/GetJob"; a stream's messages become
// Server-Sent Events, an upload's body is its bytes and a download's answer
// is the file's bytes: see Method::Kind), and requests and answers convert
// between the proto3 JSON mapping and the wire format with protobuf's own
// JSON utilities: the generated descriptors are the only schema, so a new RPC
// is routed without code here (and, like every method, is open to the roles
// server/auth/roles.cc gives it, admin only when it is not listed).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/descriptor.h"

namespace kaizen::http {

class JsonGateway {
 public:
  struct Method {
    // The gRPC method: "/kaizen.v1.FineTuneService/GetJob".
    std::string full_name;
    const google::protobuf::Descriptor* request = nullptr;
    const google::protobuf::Descriptor* response = nullptr;
    enum class Kind {
      // A JSON request, a JSON answer.
      kUnary,
      // A JSON request; the stream of messages (WatchJob) as Server-Sent
      // Events.
      kEvents,
      // A byte stream in (UploadDataset, UploadModel: a client stream of a
      // oneof `header` message, `chunk` bytes and a `sha256` trailer): the
      // header's proto3 JSON in the request header kUploadHeader, the HTTP
      // body the chunks' bytes; the server adds the trailer.
      kUpload,
      // A byte stream out (DownloadModel: a server stream whose oneof has
      // `chunk` bytes and a `sha256` trailer): the answer is the chunks'
      // bytes, checked against the trailer.
      kDownload,
    };
    Kind kind = Kind::kUnary;
  };

  // The request header that carries an upload's header message.
  static constexpr absl::string_view kUploadHeader = "Kaizen-Upload-Header";

  // One message of a download stream: its chunk's bytes, or its trailer,
  // or neither (a message that describes the file, such as the model).
  struct DownloadPiece {
    std::string chunk;
    std::string sha256;
  };

  // "/api" + Method::full_name.
  static constexpr absl::string_view kPrefix = "/api";

  // The routes of the methods of `services` (full service names, e.g.
  // "kaizen.v1.ModelService"), from the generated descriptor pool: every
  // unary and server-streaming method, and the client streams that are
  // uploads (a bidirectional stream, or another client stream, has none).
  explicit JsonGateway(const std::vector<std::string>& services);
  // The v1 services: dataset, model, fine-tune, inference (not the Open
  // Inference Protocol, which has a REST form of its own).
  static std::vector<std::string> V1Services();

  // The method a request path names (the query string ignored), or nullptr.
  const Method* Find(absl::string_view path) const;
  // Every route, sorted.
  std::vector<std::string> Routes() const;

  // The request's wire bytes from its proto3 JSON (an empty body is the
  // empty message). INVALID_ARGUMENT naming the message type and what
  // protobuf's parser found (an unknown field, a wrong type). Its size is
  // bounded by the HTTP server's body limit.
  // `last_event_id`, when not empty, is the Last-Event-ID header of an SSE
  // client reconnecting: a decimal sequence that sets the request's
  // `after_sequence` (INVALID_ARGUMENT for another value, or for a request
  // without that field).
  static absl::StatusOr<std::string> RequestBytes(const Method& method, absl::string_view json,
                                                  absl::string_view last_event_id = "");
  // The answer's proto3 JSON (lowerCamelCase names, enums by name, every
  // field printed, 64-bit integers as strings) from its wire bytes;
  // INTERNAL when they do not parse.
  static absl::StatusOr<std::string> ResponseJson(const Method& method, absl::string_view bytes);
  // One message of a stream as a Server-Sent Event:
  //   id: <its int64 field "sequence", when it has one and it is set>
  //   event: <the name of the field set in its oneof "event", else "message">
  //   data: <its proto3 JSON, on one line>
  // and a blank line. INTERNAL when the bytes do not parse.
  static absl::StatusOr<std::string> EventFrame(const Method& method, absl::string_view bytes);

  // An upload's first message, with its header from the header's proto3
  // JSON (INVALID_ARGUMENT naming the type and what the parser found).
  static absl::StatusOr<std::string> UploadHeaderBytes(const Method& method,
                                                       absl::string_view json);
  // An upload message with `chunk` set to `bytes`, or with the `sha256`
  // trailer set to `hex`.
  static std::string UploadChunkBytes(const Method& method, absl::string_view bytes);
  static std::string UploadTrailerBytes(const Method& method, absl::string_view hex);
  // A download message's piece; INTERNAL when the bytes do not parse.
  static absl::StatusOr<DownloadPiece> ParseDownloadPiece(const Method& method,
                                                          absl::string_view bytes);

 private:
  std::map<std::string, Method, std::less<>> routes_;
};

}  // namespace kaizen::http
