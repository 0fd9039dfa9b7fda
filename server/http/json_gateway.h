// The JSON face of the v1 API. Every unary and server-streaming method of
// the kaizen.v1 services gets the route "/api/<full gRPC method name>" (e.g.
// "/api/kaizen.v1.FineTuneService/GetJob"; a stream's messages become
// Server-Sent Events), and requests and answers convert
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
    // Answers with a stream of messages (WatchJob): sent as Server-Sent Events.
    bool server_streaming = false;
  };

  // "/api" + Method::full_name.
  static constexpr absl::string_view kPrefix = "/api";

  // The routes of every unary and server-streaming method of `services`
  // (client streams, the uploads, take bytes and have none) (full service names,
  // e.g. "kaizen.v1.ModelService"), from the generated descriptor pool.
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

 private:
  std::map<std::string, Method, std::less<>> routes_;
};

}  // namespace kaizen::http
