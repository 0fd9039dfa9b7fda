#include "server/http/api_handler.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "server/common/logging.h"
#include "server/http/http_status.h"
#include "server/http/stream_call.h"
#include "server/http/upload_call.h"

namespace kaizen::http {
namespace {

bool PrintableAscii(absl::string_view s) {
  for (char c : s) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

// "example.com" of "example.com:8080", "::1" of "[::1]:8080".
absl::string_view HostName(absl::string_view host) {
  if (absl::ConsumePrefix(&host, "[")) return host.substr(0, host.find(']'));
  return host.substr(0, host.find(':'));
}

struct Call {
  // First: released after the context, which holds the channel.
  CallTracker::Token token;
  grpc::ClientContext context;
  grpc::ByteBuffer request;
  grpc::ByteBuffer response;
};

}  // namespace

ApiHandler::ApiHandler(std::shared_ptr<grpc::Channel> channel, absl::Duration call_timeout,
                       std::vector<std::string> allowed_hosts, const auth::Authenticator* auth)
    : gateway_(JsonGateway::V1Services()),
      channel_(std::move(channel)),
      stub_(std::make_unique<grpc::GenericStub>(channel_)),
      call_timeout_(call_timeout),
      allowed_hosts_(std::move(allowed_hosts)),
      auth_(auth) {}

ApiHandler::~ApiHandler() {
  // The server has stopped (every call is cancelled, or done): the last
  // calls' objects go within moments, on gRPC's threads.
  if (!calls_.WaitIdle(kCallsGoneTimeout)) {
    common::LogWarning("HTTP API calls still under way at its end", {{"calls", calls_.live()}});
  }
}

void ApiHandler::Handle(HttpServer::Request request, HttpServer::Respond respond) {
  if (!allowed_hosts_.empty()) {
    const absl::string_view name = HostName(request.host);
    if (std::find(allowed_hosts_.begin(), allowed_hosts_.end(), name) == allowed_hosts_.end()) {
      return respond(ErrorAnswer(grpc::StatusCode::PERMISSION_DENIED,
                                 absl::StrCat("this server has no tokens and answers only to ",
                                              absl::StrJoin(allowed_hosts_, ", "),
                                              ", not to Host \"", absl::CHexEscape(name), "\"")));
    }
  }
  const absl::string_view path =
      absl::string_view(request.target).substr(0, request.target.find('?'));
  if (path == kSessionPath) return Session(request, respond);
  const JsonGateway::Method* method = gateway_.Find(path);
  if (method == nullptr) {
    return respond(ErrorAnswer(grpc::StatusCode::NOT_FOUND,
                               absl::StrCat("no API route ", path, "; the routes are POST ",
                                            JsonGateway::kPrefix, "/<package.Service>/<Method>"),
                               404));
  }
  if (request.method != "POST") {
    HttpServer::Response r =
        ErrorAnswer(grpc::StatusCode::UNIMPLEMENTED,
                    absl::StrCat(path, " takes POST, not ", request.method), 405);
    r.headers.emplace_back("Allow", "POST");
    return respond(std::move(r));
  }
  if (!PrintableAscii(request.authorization)) {
    return respond(ErrorAnswer(grpc::StatusCode::UNAUTHENTICATED,
                               "the Authorization header is not printable ASCII", 400));
  }
  if (method->kind == JsonGateway::Method::Kind::kUpload) {
    return Upload(*method, std::move(request), std::move(respond));
  }
  const absl::string_view type = request.content_type;
  if (!absl::StartsWithIgnoreCase(type, "application/json")) {
    return respond(ErrorAnswer(grpc::StatusCode::INVALID_ARGUMENT,
                               absl::StrCat("the body must be application/json (proto3 JSON of ",
                                            method->request->full_name(), "), not \"", type, "\""),
                               415));
  }
  absl::StatusOr<std::string> bytes = JsonGateway::RequestBytes(
      *method, request.body,
      method->kind == JsonGateway::Method::Kind::kEvents ? request.last_event_id : "");
  if (!bytes.ok()) {
    return respond(ErrorAnswer(grpc::StatusCode::INVALID_ARGUMENT, bytes.status().message()));
  }
  if (method->kind != JsonGateway::Method::Kind::kUnary) {
    return StreamCall::Start(stub_.get(), *method, *bytes, request.authorization,
                             std::move(respond), calls_.Enter());
  }
  auto call = std::make_shared<Call>();
  call->token = calls_.Enter();
  grpc::Slice slice(*bytes);
  call->request = grpc::ByteBuffer(&slice, 1);
  if (!request.authorization.empty()) {
    call->context.AddMetadata("authorization", request.authorization);
  }
  call->context.set_deadline(std::chrono::system_clock::now() +
                             absl::ToChronoNanoseconds(call_timeout_));
  stub_->UnaryCall(
      &call->context, method->full_name, grpc::StubOptions(), &call->request, &call->response,
      [call, method = *method, respond = std::move(respond)](grpc::Status status) {
        if (!status.ok()) {
          return respond(ErrorAnswer(status.error_code(), status.error_message()));
        }
        absl::StatusOr<std::string> json =
            JsonGateway::ResponseJson(method, BufferBytes(call->response));
        if (!json.ok()) {
          return respond(ErrorAnswer(grpc::StatusCode::INTERNAL, json.status().message()));
        }
        HttpServer::Response r;
        r.body = std::move(*json);
        respond(std::move(r));
      });
}

bool ApiHandler::StreamsBody(const HttpServer::Request& head) const {
  const JsonGateway::Method* method = gateway_.Find(head.target);
  return head.method == "POST" && method != nullptr &&
         method->kind == JsonGateway::Method::Kind::kUpload;
}

void ApiHandler::Upload(const JsonGateway::Method& method, HttpServer::Request request,
                        HttpServer::Respond respond) {
  if (!absl::StartsWithIgnoreCase(request.content_type, "application/octet-stream")) {
    return respond(ErrorAnswer(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("an upload's body is the file's bytes, application/octet-stream, not \"",
                     absl::CHexEscape(request.content_type), "\""),
        415));
  }
  if (request.upload_header.empty() || !PrintableAscii(request.upload_header)) {
    return respond(ErrorAnswer(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("an upload needs the ", JsonGateway::kUploadHeader, " header: the ",
                     method.request->FindFieldByName("header")->message_type()->full_name(),
                     " in proto3 JSON, printable ASCII (escape other characters as \\uXXXX)")));
  }
  if (request.body_reader == nullptr) {
    return respond(
        ErrorAnswer(grpc::StatusCode::INTERNAL, "this HTTP server does not stream request bodies"));
  }
  absl::StatusOr<std::string> header =
      JsonGateway::UploadHeaderBytes(method, request.upload_header);
  if (!header.ok()) {
    return respond(ErrorAnswer(grpc::StatusCode::INVALID_ARGUMENT, header.status().message()));
  }
  UploadCall::Start(stub_.get(), method, *std::move(header), std::move(request.body_reader),
                    request.authorization, std::move(respond), calls_.Enter());
}

void ApiHandler::Session(const HttpServer::Request& request,
                         const HttpServer::Respond& respond) const {
  if (request.method != "GET") {
    HttpServer::Response r =
        ErrorAnswer(grpc::StatusCode::UNIMPLEMENTED,
                    absl::StrCat(kSessionPath, " takes GET, not ", request.method), 405);
    r.headers.emplace_back("Allow", "GET");
    return respond(std::move(r));
  }
  if (!PrintableAscii(request.authorization)) {
    return respond(ErrorAnswer(grpc::StatusCode::UNAUTHENTICATED,
                               "the Authorization header is not printable ASCII", 400));
  }
  const bool tokens = auth_ != nullptr && auth_->enabled();
  auth::Caller caller;
  if (tokens) {
    std::optional<absl::string_view> header;
    if (!request.authorization.empty()) header = request.authorization;
    absl::StatusOr<auth::Caller> identified = auth_->Identify(header);
    if (!identified.ok()) {
      return respond(ErrorAnswer(static_cast<grpc::StatusCode>(identified.status().code()),
                                 identified.status().message()));
    }
    caller = *std::move(identified);
  }
  google::protobuf::Struct body;
  auto& fields = *body.mutable_fields();
  fields["caller"].set_string_value(caller.name);
  fields["role"].set_string_value(std::string(auth::RoleName(caller.role)));
  fields["tokensRequired"].set_bool_value(tokens);
  auto& methods = *fields["methods"].mutable_list_value();
  for (const std::string& route : gateway_.Routes()) {
    const JsonGateway::Method* method = gateway_.Find(route);
    if (!tokens || auth_->Permit(caller, method->full_name).ok()) {
      methods.add_values()->set_string_value(route);
    }
  }
  HttpServer::Response r;
  if (!google::protobuf::util::MessageToJsonString(body, &r.body).ok()) {
    return respond(ErrorAnswer(grpc::StatusCode::INTERNAL, "the session could not be printed"));
  }
  respond(std::move(r));
}

}  // namespace kaizen::http
