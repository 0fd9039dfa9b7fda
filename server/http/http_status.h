// What an HTTP client sees of a gRPC status: the code a browser or curl
// expects, and a proto3-JSON error body that keeps the gRPC code and message.
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>

#include "absl/strings/string_view.h"
#include "server/http/http_server.h"

namespace kaizen::http {

// OK 200; INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE 400;
// UNAUTHENTICATED 401; PERMISSION_DENIED 403; NOT_FOUND 404;
// ALREADY_EXISTS, ABORTED 409; RESOURCE_EXHAUSTED 429; CANCELLED 499;
// UNIMPLEMENTED 501; UNAVAILABLE 503; DEADLINE_EXCEEDED 504; the rest 500.
int HttpStatusFor(grpc::StatusCode code);

// {"code":5,"status":"NOT_FOUND","message":"..."}: the gRPC code as a number
// and by name, and the message, escaped by protobuf's JSON printer.
std::string ErrorJson(grpc::StatusCode code, absl::string_view message);

// An error answer: the status's HTTP code (or `http_status` when positive)
// and ErrorJson; 401 carries `WWW-Authenticate: Bearer`.
HttpServer::Response ErrorAnswer(grpc::StatusCode code, absl::string_view message,
                                 int http_status = 0);

// "NOT_FOUND" for 5; "UNKNOWN_CODE" outside 0..16.
absl::string_view StatusCodeName(grpc::StatusCode code);

}  // namespace kaizen::http
