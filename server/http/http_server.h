// An HTTP/1.1 server on Boost.Beast (asynchronous, on threads of its own):
// it reads each request within limits (header bytes, body bytes, a deadline
// for the whole request), hands it to a handler that may answer later from
// any thread, and writes the answer with the console's security headers.
// An answer may also be a stream (Server-Sent Events): its body is sent in
// chunks, each asked for only when the previous one is on the socket, so a
// slow client holds back its producer and nothing piles up here.
// Connections beyond `max_connections` get 503 and are closed. It parses no
// HTTP itself: Beast does, and OpenSSL (through Asio) does TLS when it is on.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace kaizen::http {

class HttpServer {
 public:
  struct Request;
  // The largest header block a server may allow: every line it reads (a
  // header, a chunk's size and extensions, a trailer field) must fit in its
  // 64 KiB read buffer.
  static constexpr size_t kMaxHeaderBytes = 32 << 10;
  struct Options {
    // Listen address; port 0 picks a free one (see port()).
    std::string host = "127.0.0.1";
    int port = 0;
    // Threads running the connections (--http_threads); at least 1.
    int threads = 1;
    // Connections open at once (--http_max_connections).
    int max_connections = 256;
    // The whole request, headers and body, must arrive within this long
    // (--http_request_timeout_seconds), and an answer must be taken within
    // it; otherwise the connection is closed.
    absl::Duration request_timeout = absl::Seconds(30);
    // Largest request header block (431; at most kMaxHeaderBytes) and body
    // (413).
    size_t max_header_bytes = 16 << 10;
    size_t max_body_bytes = 16 << 20;
    // A stream with nothing to send for this long sends its keep-alive
    // bytes (an SSE comment): proxies keep the connection, and a client that
    // went away is noticed.
    absl::Duration stream_keepalive_interval = absl::Seconds(15);
    // The kernel's send buffer of a streamed answer's socket (SO_SNDBUF);
    // 0 leaves the kernel's own, which may grow to megabytes per stream.
    // Smaller makes a slow client hold back its stream sooner.
    int stream_send_buffer_bytes = 0;
    // Whether the handler reads a request's body itself, piece by piece
    // (an upload), given the request without it: then the body may be up
    // to max_streamed_body_bytes, each piece of it must arrive within
    // request_timeout, and the connection closes after the answer.
    std::function<bool(const Request& head)> streams_body;
    uint64_t max_streamed_body_bytes = uint64_t{4} << 30;
    // The size of each piece read (the last may be shorter).
    size_t body_piece_bytes = 256 << 10;
    // HTTPS (TLS 1.2 or later) with this PEM certificate chain and key; with
    // `tls_client_ca` too, only clients with a certificate it signed
    // connect. Empty: plain HTTP.
    std::string tls_cert;
    std::string tls_key;
    std::string tls_client_ca;
  };

  // The body of a request the handler reads itself (Options::streams_body).
  class BodyReader {
   public:
    virtual ~BodyReader() = default;
    // Reads the next piece. `deliver` is called once, from the server's
    // threads: with its bytes (not empty), with nullopt at the end of the
    // body, or with why it cannot be read: RESOURCE_EXHAUSTED (larger than
    // allowed), INVALID_ARGUMENT (not valid HTTP), DEADLINE_EXCEEDED (a piece
    // took longer than the request timeout), CANCELLED (the client left, the
    // server stops). One read at a time.
    using Deliver = std::function<void(absl::StatusOr<std::optional<std::string>>)>;
    virtual void Read(Deliver deliver) = 0;
  };

  // The body of a streamed answer, produced piece by piece.
  class Stream {
   public:
    virtual ~Stream() = default;
    // Asks for the next piece. `deliver` is called once, from any thread,
    // with its bytes, or with nullopt when the stream has ended. The server
    // asks again only after writing the piece.
    virtual void Next(std::function<void(std::optional<std::string>)> deliver) = 0;
    // The connection is closing (the client left, a write timed out, the
    // server stops): stop producing. Called at most once, from any thread;
    // a `deliver` after it is ignored.
    virtual void Cancel() = 0;
    // Asked when the stream has ended (nullopt): whether it broke off (a
    // download whose source failed). The connection is then closed without
    // the final chunk, so that the client sees an incomplete answer.
    virtual bool Failed() const { return false; }
  };

  struct Request {
    std::string method;  // "GET", "POST", ...
    std::string target;  // path and query, as sent
    std::string authorization;
    std::string content_type;
    std::string host;           // the Host header
    std::string last_event_id;  // the Last-Event-ID header (SSE reconnection)
    std::string upload_header;  // the Kaizen-Upload-Header header (an upload's header message)
    std::string body;
    // Instead of `body`, when Options::streams_body chose this request.
    std::shared_ptr<BodyReader> body_reader;
  };
  struct Response {
    int status = 200;
    std::string content_type = "application/json";
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;
    // When set, `body` is ignored: the answer is sent with chunked transfer
    // encoding from this stream's pieces, `keepalive` written whenever it
    // is idle for the interval, and the connection closed at its end.
    std::shared_ptr<Stream> stream;
    std::string keepalive;
  };
  // Answers exactly once, from any thread. A streamed answer that finds its
  // connection gone has its stream cancelled.
  using Respond = std::function<void(Response)>;
  using Handler = std::function<void(Request, Respond)>;

  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(Options options, Handler handler);
  ~HttpServer();

  int port() const;
  // Reads the TLS files again: connections accepted from now on use them
  // (open ones keep theirs). The old ones stay on an error.
  absl::Status ReloadTls();
  // Stops accepting new connections; those open go on (a draining server
  // lets their calls finish before Stop).
  void StopAccepting();
  // Stops accepting, closes every connection and joins the threads; answers
  // that arrive later are dropped. Idempotent.
  void Stop();

 private:
  struct Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kaizen::http
