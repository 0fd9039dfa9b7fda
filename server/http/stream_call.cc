#include "server/http/stream_call.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/http/http_status.h"

namespace kaizen::http {

std::string BufferBytes(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (!buffer.Dump(&slices).ok()) return bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return bytes;
}

namespace {

std::optional<std::string> FinalFrame(bool bytes, const grpc::Status& status) {
  if (bytes) return std::nullopt;  // a download ends with its last chunk; Failed() tells how
  if (status.ok()) {
    return absl::StrCat("event: stream_end\ndata: ",
                        ErrorJson(grpc::StatusCode::OK, "the service closed the stream"), "\n\n");
  }
  return absl::StrCat("event: stream_error\ndata: ",
                      ErrorJson(status.error_code(), status.error_message()), "\n\n");
}

}  // namespace

StreamCall::StreamCall(JsonGateway::Method method, HttpServer::Respond respond,
                       CallTracker::Token token)
    : token_(std::move(token)),
      method_(std::move(method)),
      bytes_(method_.kind == JsonGateway::Method::Kind::kDownload),
      respond_(std::move(respond)) {
  if (bytes_) {
    absl::MutexLock lock(&mu_);
    preamble_sent_ = true;  // a file has none
  }
}

void StreamCall::Start(grpc::GenericStub* stub, const JsonGateway::Method& method,
                       const std::string& request, const std::string& authorization,
                       HttpServer::Respond respond, CallTracker::Token token) {
  std::shared_ptr<StreamCall> call(new StreamCall(method, std::move(respond), std::move(token)));
  call->self_ = call;
  grpc::Slice slice(request);
  call->request_ = grpc::ByteBuffer(&slice, 1);
  if (!authorization.empty()) call->context_.AddMetadata("authorization", authorization);
  stub->PrepareBidiStreamingCall(&call->context_, call->method_.full_name, grpc::StubOptions(),
                                 call.get());
  // Reads start from the HTTP side (Next), outside any reaction: the hold
  // keeps the call from finishing until reading is over.
  call->AddHold();
  call->StartWriteLast(&call->request_, grpc::WriteOptions());
  call->StartCall();
}

void StreamCall::OnReadInitialMetadataDone(bool ok) {
  if (!ok) {
    // Refused before the stream started: OnDone answers with the status.
    ReleaseHold();
    return;
  }
  if (context_.GetServerInitialMetadata().count(kAcceptedKey) == 0) {
    // Accepted or refused (trailers only)? The first message, or the end,
    // will tell: read it now, and answer then.
    {
      absl::MutexLock lock(&mu_);
      reading_ = true;
    }
    StartRead(&read_);
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    answered_ = true;
  }
  AnswerWithStream();
}

void StreamCall::AnswerWithStream() {
  HttpServer::Response r;
  r.stream = shared_from_this();
  if (bytes_) {
    r.content_type = "application/octet-stream";
    r.headers.emplace_back("Content-Disposition", "attachment");
  } else {
    r.content_type = "text/event-stream";
    r.headers.emplace_back("X-Accel-Buffering", "no");  // a proxy must not hold events back
    r.keepalive = kKeepalive;
  }
  respond_(std::move(r));
}

bool StreamCall::Failed() const {
  absl::MutexLock lock(&mu_);
  return bytes_ && (!status_.has_value() || !status_->ok() || !verified_);
}

std::optional<std::string> StreamCall::Frame(absl::string_view message) {
  if (!bytes_) {
    absl::StatusOr<std::string> event = JsonGateway::EventFrame(method_, message);
    if (event.ok()) return *std::move(event);
    // Cannot happen with the service's own messages; end the stream.
    final_sent_ = reads_over_ = true;
    return FinalFrame(
        false, grpc::Status(grpc::StatusCode::INTERNAL, std::string(event.status().message())));
  }
  absl::StatusOr<JsonGateway::DownloadPiece> piece =
      JsonGateway::ParseDownloadPiece(method_, message);
  if (piece.ok() && !piece->chunk.empty()) {
    if (trailer_seen_) piece = absl::InternalError("a chunk after the checksum");
    if (piece.ok()) {
      hash_.Update(piece->chunk);
      return std::move(piece->chunk);
    }
  }
  if (piece.ok() && !piece->sha256.empty()) {
    if (trailer_seen_) {
      piece = absl::InternalError("a second checksum");
    } else {
      trailer_seen_ = true;
      verified_ = hash_.HexDigest() == piece->sha256;
      if (verified_) return std::string();
      piece = absl::DataLossError("the file's bytes do not match its checksum");
    }
  }
  if (!piece.ok()) {
    // The answer is cut short: the client sees an incomplete download.
    verified_ = false;
    final_sent_ = reads_over_ = true;
    return std::nullopt;
  }
  return std::string();  // a message about the file (the model): nothing to send
}

void StreamCall::Next(std::function<void(std::optional<std::string>)> deliver) {
  std::optional<std::string> now;
  bool read = false;
  bool answer_now = true;
  {
    absl::MutexLock lock(&mu_);
    if (!preamble_sent_) {
      preamble_sent_ = true;
      now = kPreamble;
    } else if (stashed_.has_value()) {
      now = std::move(stashed_);
      stashed_.reset();
    } else if (final_sent_) {
      now = std::nullopt;
    } else if (reads_over_ && status_.has_value()) {
      final_sent_ = true;
      now = FinalFrame(bytes_, *status_);
    } else {
      pending_ = std::move(deliver);
      answer_now = false;
      if (!reads_over_) read = reading_ = true;
    }
  }
  if (answer_now) return deliver(std::move(now));
  if (read) StartRead(&read_);
}

void StreamCall::OnReadDone(bool ok) {
  std::function<void(std::optional<std::string>)> deliver;
  std::optional<std::string> frame;
  bool first = false, again = false;
  {
    absl::MutexLock lock(&mu_);
    reading_ = false;
    if (!ok) {
      reads_over_ = true;  // OnDone answers, or delivers the last frame to pending_
    } else {
      frame = Frame(BufferBytes(read_));
      const bool nothing = frame.has_value() && frame->empty();
      if (!answered_) {
        // The first message of a stream not yet answered: it is accepted.
        answered_ = first = true;
        if (!nothing) stashed_ = std::move(frame);
      } else if (nothing && !cancelled_) {
        again = reading_ = true;  // nothing to send yet: read on for the waiting Next
      } else {
        deliver = std::move(pending_);
        pending_ = nullptr;
      }
    }
  }
  if (!ok) return ReleaseHold();
  if (first) AnswerWithStream();
  if (again) return StartRead(&read_);
  if (deliver) deliver(std::move(frame));
  bool over;
  {
    absl::MutexLock lock(&mu_);
    // Cancelled while this read was in flight: nobody will ask for more.
    over = final_sent_ || cancelled_;
  }
  if (over) {
    context_.TryCancel();
    ReleaseHold();
  }
}

void StreamCall::OnDone(const grpc::Status& status) {
  std::function<void(std::optional<std::string>)> deliver;
  std::optional<std::string> frame;
  bool refuse = false, empty = false;
  std::shared_ptr<StreamCall> self;
  {
    absl::MutexLock lock(&mu_);
    status_ = status;
    reads_over_ = true;
    if (!answered_) {
      // Ended before a message: refused, or a stream with none (its end only).
      answered_ = true;
      (status.ok() ? empty : refuse) = true;
    } else if (pending_ && !final_sent_) {
      final_sent_ = true;
      frame = FinalFrame(bytes_, status);
      deliver = std::move(pending_);
      pending_ = nullptr;
    }
    self = std::move(self_);  // gRPC is done with this call; the HTTP side may still hold it
  }
  if (refuse) {
    respond_(ErrorAnswer(status.error_code(), status.error_message()));
  } else if (empty) {
    AnswerWithStream();
  } else if (deliver) {
    deliver(std::move(frame));
  }
}

void StreamCall::Cancel() {
  bool release = false;
  {
    absl::MutexLock lock(&mu_);
    pending_ = nullptr;
    cancelled_ = true;
    // A read in flight ends (cancelled or not) and releases the hold itself.
    release = holding_ && !reading_;
  }
  context_.TryCancel();
  if (release) ReleaseHold();
}

void StreamCall::ReleaseHold() {
  {
    absl::MutexLock lock(&mu_);
    if (!holding_) return;
    holding_ = false;
  }
  RemoveHold();
}

}  // namespace kaizen::http
