// The JSON API over HTTP: each POST /api/<full gRPC method name> becomes the
// same gRPC call, made in-process on the server's own channel
// (grpc::Server::InProcessChannel) with the request's bearer token as its
// "authorization" metadata. So the services check the token and the role,
// log and count the call exactly as for a gRPC client, and answer with the
// same statuses (http_status.h maps them to HTTP codes).
#pragma once

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "server/auth/authenticator.h"
#include "server/http/call_tracker.h"
#include "server/http/http_server.h"
#include "server/http/json_gateway.h"

namespace kaizen::http {

class ApiHandler {
 public:
  // `call_timeout`: the deadline of each call (an evaluation of a large
  // dataset is the longest). `allowed_hosts`: when not empty, the only Host
  // header names (without the port) answered; the rest get 403. A server
  // without tokens passes its loopback names, so that a web page cannot
  // reach it through DNS rebinding (a name of the attacker's that resolves
  // to 127.0.0.1).
  // `auth` (not owned, may be null: no tokens) answers GET /api/session.
  ApiHandler(std::shared_ptr<grpc::Channel> channel, absl::Duration call_timeout,
             std::vector<std::string> allowed_hosts = {},
             const auth::Authenticator* auth = nullptr);
  // Waits (up to kCallsGoneTimeout) until the objects of the calls it made
  // are gone: the owner destroys it after stopping the server and the HTTP
  // server, so that no call's last reference to the channel drops on a
  // gRPC thread as the process exits (call_tracker.h).
  ~ApiHandler();
  ApiHandler(const ApiHandler&) = delete;
  ApiHandler& operator=(const ApiHandler&) = delete;

  static constexpr absl::Duration kCallsGoneTimeout = absl::Seconds(30);

  // POST with a JSON body (Content-Type application/json, even when empty:
  // a cross-site page cannot send that without the browser asking first) to
  // a route of JsonGateway: the method's answer as JSON, or its error as
  // {"code","status","message"} with the mapped HTTP status. A
  // server-streaming method (WatchJob) answers with Server-Sent Events
  // (stream_call.h); its Last-Event-ID header sets after_sequence.
  // An upload route (UploadDataset, UploadModel) takes POST with
  // Content-Type application/octet-stream, the header message's proto3 JSON
  // in the Kaizen-Upload-Header header (printable ASCII: other characters
  // escaped as \uXXXX) and the file's bytes as the body, read piece by
  // piece (upload_call.h; StreamsBody says which requests): the uploaded
  // message as JSON, 400 without the header, 413 for a body over the
  // server's limit. A cross-site page cannot send that custom header
  // without the browser asking first. A download route (DownloadModel)
  // answers with the file's bytes (application/octet-stream).
  // GET /api/session says who the Authorization header names and what they
  // may call: {"caller","role","tokensRequired","methods":[routes...]}, so
  // that a page shows only the buttons that work (401 for an unknown token). 404 for an
  // unknown route, 405 for another verb, 415 for another content type, 400
  // for a body that is not the request type in proto3 JSON or an
  // Authorization header that is not printable ASCII, 403 for a Host not
  // allowed.
  void Handle(HttpServer::Request request, HttpServer::Respond respond);

  const JsonGateway& gateway() const { return gateway_; }

  // Whether `head` is an upload, whose body the handler reads itself
  // (HttpServer::Options::streams_body).
  bool StreamsBody(const HttpServer::Request& head) const;

  // The path of the session route.
  static constexpr absl::string_view kSessionPath = "/api/session";

 private:
  void Session(const HttpServer::Request& request, const HttpServer::Respond& respond) const;
  void Upload(const JsonGateway::Method& method, HttpServer::Request request,
              HttpServer::Respond respond);

  JsonGateway gateway_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<grpc::GenericStub> stub_;
  absl::Duration call_timeout_;
  std::vector<std::string> allowed_hosts_;
  const auth::Authenticator* auth_;
  CallTracker calls_;
};

}  // namespace kaizen::http
