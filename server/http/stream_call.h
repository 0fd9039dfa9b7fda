// A server-streaming gRPC call made in-process and served as a streamed
// HTTP answer (http_server.h's Stream): Server-Sent Events for a stream of
// events (WatchJob), the file's bytes for a download (DownloadModel: each
// chunk as it comes, checked against the trailer's SHA-256 at the end; a
// mismatch or an error cuts the answer short). It reads the next message only
// when the HTTP side asks for the next piece, that is once the previous
// frame is on the socket; in-process gRPC completes the service's write only
// when it is read, so a slow browser backs up the service's own per-watcher
// queue, whose bound ends the stream (RESOURCE_EXHAUSTED, an `error` event)
// as for a slow gRPC watcher. No thread waits for any of it.
#pragma once

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/synchronization/mutex.h"
#include "server/common/sha256.h"
#include "server/http/call_tracker.h"
#include "server/http/http_server.h"
#include "server/http/json_gateway.h"

namespace kaizen::http {

// The bytes of a gRPC message buffer, in one string.
std::string BufferBytes(const grpc::ByteBuffer& buffer);

class StreamCall : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>,
                   public HttpServer::Stream,
                   public std::enable_shared_from_this<StreamCall> {
 public:
  // What the SSE answer starts with: the client's reconnection delay.
  static constexpr char kPreamble[] = "retry: 3000\n\n";
  // Written when the stream is idle (an SSE comment).
  static constexpr char kKeepalive[] = ": keep-alive\n\n";

  // The initial metadata key by which a service says it accepted a stream
  // (WatchJob sends it once subscribed): the 200 goes out at once, not at the
  // first message, which may be far off. A gRPC refusal is trailers-only, so
  // an empty initial metadata cannot tell them apart.
  static constexpr char kAcceptedKey[] = "kaizen-stream";

  // Calls `method` with `request` (its wire bytes) and the caller's
  // Authorization header. `respond` gets, once: the 200 text/event-stream
  // answer streaming from this call when the service accepts it (says so in
  // its initial metadata, or sends a first message), or the service's
  // refusal (not found, permission denied, ...) as an error answer.
  // The stream ends with an event `stream_end` (the service closed it:
  // data is {"code":0,...}; the job ended, or the server is stopping, so a
  // client that has not seen a final state reconnects) or `stream_error`
  // (data is the status as the API's error JSON, e.g. RESOURCE_EXHAUSTED for
  // a client too far behind). Not `end`/`error`: a message's own event name
  // may be `error` (a JobEvent's error field).
  // `token` counts the call as under way until its object is destroyed.
  static void Start(grpc::GenericStub* stub, const JsonGateway::Method& method,
                    const std::string& request, const std::string& authorization,
                    HttpServer::Respond respond, CallTracker::Token token);

  void Next(std::function<void(std::optional<std::string>)> deliver) override;
  void Cancel() override;
  bool Failed() const override;

  void OnReadInitialMetadataDone(bool ok) override;
  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

 private:
  StreamCall(JsonGateway::Method method, HttpServer::Respond respond, CallTracker::Token token);
  // Ends the hold taken at the start, once: the call may finish after it.
  void ReleaseHold();
  // The 200 answer streaming from this call.
  void AnswerWithStream();
  // What a message sends: its event, or its chunk's bytes (empty: nothing,
  // nullopt: the end).
  std::optional<std::string> Frame(absl::string_view message) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // First: released after every other member (the context, which holds
  // the channel).
  CallTracker::Token token_;
  const JsonGateway::Method method_;
  // A download (the file's bytes), not events.
  const bool bytes_;
  grpc::ClientContext context_;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer read_;
  HttpServer::Respond respond_;
  // This call holds itself from its start until gRPC is done with it.
  std::shared_ptr<StreamCall> self_;

  mutable absl::Mutex mu_;
  // A download's checksum of the chunks so far, and whether the trailer
  // came and matched.
  common::Sha256 hash_ ABSL_GUARDED_BY(mu_);
  bool trailer_seen_ ABSL_GUARDED_BY(mu_) = false;
  bool verified_ ABSL_GUARDED_BY(mu_) = false;
  bool answered_ ABSL_GUARDED_BY(mu_) = false;
  bool holding_ ABSL_GUARDED_BY(mu_) = true;
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_over_ ABSL_GUARDED_BY(mu_) = false;
  bool preamble_sent_ ABSL_GUARDED_BY(mu_) = false;
  // A first message read before answering (a service that does not say it
  // accepted), sent after the preamble.
  std::optional<std::string> stashed_ ABSL_GUARDED_BY(mu_);
  std::optional<grpc::Status> status_ ABSL_GUARDED_BY(mu_);
  bool final_sent_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void(std::optional<std::string>)> pending_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kaizen::http
