#include "server/http/upload_call.h"

#include <utility>

#include "server/http/http_status.h"
#include "server/http/stream_call.h"

namespace kaizen::http {
namespace {

// The HTTP status for a body that could not be read.
int BodyHttpStatus(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kResourceExhausted:
      return 413;
    case absl::StatusCode::kDeadlineExceeded:
      return 408;
    case absl::StatusCode::kInvalidArgument:
      return 400;
    default:
      return HttpStatusFor(static_cast<grpc::StatusCode>(code));
  }
}

grpc::ByteBuffer Buffer(std::string bytes) {
  grpc::Slice slice(std::move(bytes));
  return grpc::ByteBuffer(&slice, 1);
}

}  // namespace

UploadCall::UploadCall(JsonGateway::Method method, std::shared_ptr<HttpServer::BodyReader> body,
                       HttpServer::Respond respond, CallTracker::Token token)
    : token_(std::move(token)),
      method_(std::move(method)),
      body_(std::move(body)),
      respond_(std::move(respond)) {}

void UploadCall::Start(grpc::GenericStub* stub, const JsonGateway::Method& method,
                       std::string header, std::shared_ptr<HttpServer::BodyReader> body,
                       const std::string& authorization, HttpServer::Respond respond,
                       CallTracker::Token token) {
  std::shared_ptr<UploadCall> call(
      new UploadCall(method, std::move(body), std::move(respond), std::move(token)));
  call->self_ = call;
  call->write_ = Buffer(std::move(header));
  if (!authorization.empty()) call->context_.AddMetadata("authorization", authorization);
  stub->PrepareBidiStreamingCall(&call->context_, call->method_.full_name, grpc::StubOptions(),
                                 call.get());
  // Writes start from the HTTP side (a piece of the body read), outside any
  // reaction: the hold keeps the call from finishing until writing is over.
  call->AddHold();
  {
    absl::MutexLock lock(&call->mu_);
    call->writing_ = true;
  }
  call->StartWrite(&call->write_);
  call->StartRead(&call->response_);
  call->StartCall();
}

void UploadCall::OnWriteDone(bool ok) {
  bool trailer, done;
  {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    trailer = trailer_written_;
    done = service_done_;
  }
  // Not ok, or done: the service ended the call (it refused the upload);
  // OnDone says why.
  if (!ok || done) return StopWriting();
  if (trailer) {
    StartWritesDone();
    return StopWriting();
  }
  ReadBody();
}

void UploadCall::ReadBody() {
  // The piece may come after the service ended the call (and OnDone): it
  // keeps this call alive, and is dropped.
  body_->Read([self = self_](absl::StatusOr<std::optional<std::string>> piece) {
    self->OnBody(std::move(piece));
  });
}

void UploadCall::OnBody(absl::StatusOr<std::optional<std::string>> piece) {
  if (!piece.ok()) {
    {
      absl::MutexLock lock(&mu_);
      if (writing_over_) return;
      body_error_ = piece.status();
    }
    context_.TryCancel();  // the service drops what it has
    return StopWriting();
  }
  std::string message;
  {
    absl::MutexLock lock(&mu_);
    if (writing_over_) return;  // the service has answered already
    writing_ = true;
    if (piece->has_value()) {
      hash_.Update(**piece);
      message = JsonGateway::UploadChunkBytes(method_, **piece);
    } else {
      trailer_written_ = true;
      message = JsonGateway::UploadTrailerBytes(method_, hash_.HexDigest());
    }
  }
  write_ = Buffer(std::move(message));
  StartWrite(&write_);
}

void UploadCall::StopWriting() {
  {
    absl::MutexLock lock(&mu_);
    if (writing_over_) return;
    writing_over_ = true;
  }
  RemoveHold();
}

void UploadCall::OnReadDone(bool) {
  // The service has ended the call: with its answer (in response_), or
  // with an error (in OnDone), such as a refusal at the header while the
  // client is still sending. Waiting for a piece of the body then would
  // hold the answer back until the client has sent it all: stop writing
  // now (a write in flight stops at its end).
  bool stop;
  {
    absl::MutexLock lock(&mu_);
    service_done_ = true;
    stop = !writing_ && !writing_over_;
    if (stop) writing_over_ = true;
  }
  if (stop) RemoveHold();
}

void UploadCall::OnDone(const grpc::Status& status) {
  absl::Status body_error;
  std::shared_ptr<UploadCall> self;
  {
    absl::MutexLock lock(&mu_);
    body_error = body_error_;
    self = std::move(self_);  // this call ends with this reaction
  }
  if (!body_error.ok()) {
    return respond_(ErrorAnswer(static_cast<grpc::StatusCode>(body_error.code()),
                                body_error.message(), BodyHttpStatus(body_error.code())));
  }
  if (!status.ok()) return respond_(ErrorAnswer(status.error_code(), status.error_message()));
  absl::StatusOr<std::string> json = JsonGateway::ResponseJson(method_, BufferBytes(response_));
  if (!json.ok()) {
    return respond_(ErrorAnswer(grpc::StatusCode::INTERNAL, json.status().message()));
  }
  HttpServer::Response r;
  r.body = *std::move(json);
  respond_(std::move(r));
}

}  // namespace kaizen::http
