// An upload (UploadDataset, UploadModel) from an HTTP request: the
// Kaizen-Upload-Header's message first, then the body's bytes as chunks, as
// they arrive, then the SHA-256 of them all; made in-process on the
// server's own channel, so the service checks, limits and stores it as any
// gRPC upload (a failed one leaves nothing behind). It reads the next piece
// of the body only when the service has taken the previous one: a slow
// service holds back the client, and no body is ever held whole.
#pragma once

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "server/common/sha256.h"
#include "server/http/call_tracker.h"
#include "server/http/http_server.h"
#include "server/http/json_gateway.h"

namespace kaizen::http {

class UploadCall : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  // Calls `method` (Kind::kUpload) with `header` (the wire bytes of its
  // first message) and the bytes of `body`. `respond` gets, once, the
  // service's answer as JSON, its error, or why the body could not be read
  // (413 larger than allowed, 408 too slow, 400 not valid HTTP). `token`
  // counts the call as under way until its object is destroyed.
  static void Start(grpc::GenericStub* stub, const JsonGateway::Method& method, std::string header,
                    std::shared_ptr<HttpServer::BodyReader> body, const std::string& authorization,
                    HttpServer::Respond respond, CallTracker::Token token);

  void OnWriteDone(bool ok) override;
  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

 private:
  UploadCall(JsonGateway::Method method, std::shared_ptr<HttpServer::BodyReader> body,
             HttpServer::Respond respond, CallTracker::Token token);
  // Asks for the next piece of the body, and writes it.
  void ReadBody();
  void OnBody(absl::StatusOr<std::optional<std::string>> piece);
  // The service will be sent nothing more: the hold taken at the start ends.
  void StopWriting();

  // First: released after every other member (the context, which holds
  // the channel).
  CallTracker::Token token_;
  const JsonGateway::Method method_;
  std::shared_ptr<HttpServer::BodyReader> body_;
  HttpServer::Respond respond_;
  grpc::ClientContext context_;
  grpc::ByteBuffer write_;
  grpc::ByteBuffer response_;
  // Holds itself until gRPC is done with it (a body read in flight holds
  // it too).
  std::shared_ptr<UploadCall> self_;

  absl::Mutex mu_;
  common::Sha256 hash_ ABSL_GUARDED_BY(mu_);
  bool trailer_written_ ABSL_GUARDED_BY(mu_) = false;
  // A write is in flight.
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  // The service has ended the call (OnReadDone).
  bool service_done_ ABSL_GUARDED_BY(mu_) = false;
  // Nothing more will be written: the start's hold is released.
  bool writing_over_ ABSL_GUARDED_BY(mu_) = false;
  // Why the body could not be read, when it could not.
  absl::Status body_error_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kaizen::http
