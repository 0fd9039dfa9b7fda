#include "server/http/http_server.h"

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <deque>
#include <limits>
#include <optional>
#include <set>
#include <thread>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/common/logging.h"
#include "server/common/status_macros.h"
#include "server/http/http_status.h"

namespace kaizen::http {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = net::ip::tcp;

namespace {

// Sent with every answer. The console loads nothing from elsewhere and runs
// no inline script; API answers are never cached.
template <typename Body>
void AddSecurityHeaders(bhttp::response<Body>* r) {
  r->set("Content-Security-Policy",
         "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
         "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
         "form-action 'self'");
  r->set("X-Content-Type-Options", "nosniff");
  r->set("Referrer-Policy", "no-referrer");
  r->set(bhttp::field::cache_control, "no-store");
}

// A response head: status, the server's name, the content type, the
// security headers and the handler's own headers.
template <typename Body>
std::shared_ptr<bhttp::response<Body>> Head(const HttpServer::Response& r, unsigned version) {
  auto res = std::make_shared<bhttp::response<Body>>(static_cast<bhttp::status>(r.status), version);
  res->set(bhttp::field::server, "kaizen");
  res->set(bhttp::field::content_type, r.content_type);
  AddSecurityHeaders(res.get());
  for (const auto& [name, value] : r.headers) res->set(name, value);
  return res;
}

// The API's error shape (http_status.h) for what the server refuses itself.
std::string ErrorBody(int status, absl::string_view message) {
  return ErrorJson(status == 400   ? grpc::StatusCode::INVALID_ARGUMENT
                   : status == 501 ? grpc::StatusCode::UNIMPLEMENTED
                   : status == 503 ? grpc::StatusCode::UNAVAILABLE
                                   : grpc::StatusCode::RESOURCE_EXHAUSTED,
                   message);
}

// A connection, plain or TLS (Session<Stream>), as the server keeps it.
class Connection {
 public:
  virtual ~Connection() = default;
  // Closes the connection (on its executor).
  virtual void Shutdown() = 0;
};

// What the server and its connections share. A connection keeps it (and so
// the io_context its socket belongs to) alive as long as it lives.
struct Shared {
  HttpServer::Options options;
  HttpServer::Handler handler;
  std::shared_ptr<net::io_context> ioc;
  std::atomic<int> open{0};
  std::atomic<bool> stopped{false};
  absl::Mutex mu;
  // Every connection, to close them on Stop().
  std::set<std::weak_ptr<Connection>, std::owner_less<std::weak_ptr<Connection>>> sessions
      ABSL_GUARDED_BY(mu);
  // Connections waiting for their handler's answer: nothing else holds them
  // then. Stop() lets them go; a late answer finds none and is dropped.
  std::set<std::shared_ptr<Connection>> waiting ABSL_GUARDED_BY(mu);
  // With TLS: the context new connections take (ReloadTls replaces it).
  std::shared_ptr<ssl::context> tls ABSL_GUARDED_BY(mu);
};

// The TCP layer of a plain or TLS stream.
template <typename Stream>
beast::tcp_stream& Tcp(Stream& stream) {
  return beast::get_lowest_layer(stream);
}

using TlsStream = beast::ssl_stream<beast::tcp_stream>;

template <typename Stream>
Stream MakeStream(tcp::socket socket, ssl::context* tls) {
  if constexpr (std::is_same_v<Stream, TlsStream>) {
    return Stream(std::move(socket), *tls);
  } else {
    return Stream(std::move(socket));
  }
}

// One connection: beast::tcp_stream, or beast::ssl_stream over one.
template <typename Stream>
class Session : public Connection, public std::enable_shared_from_this<Session<Stream>> {
 public:
  // `tls`: the context of a TLS stream, kept as long as it (null for a
  // plain one).
  Session(tcp::socket socket, std::shared_ptr<Shared> shared, std::shared_ptr<ssl::context> tls)
      : shared_(std::move(shared)),
        tls_(std::move(tls)),
        stream_(MakeStream<Stream>(std::move(socket), tls_.get())) {
    ++shared_->open;
  }
  ~Session() override {
    --shared_->open;
    absl::MutexLock lock(&shared_->mu);
    shared_->sessions.erase(this->weak_from_this());  // expired, but still names this one
  }

  void Run(bool over_limit) {
    bool stopped;
    {
      // Under the lock Stop() sets `stopped` with: a connection accepted as
      // it stops is either in its list or sees the flag.
      absl::MutexLock lock(&shared_->mu);
      stopped = shared_->stopped;
      if (!stopped) shared_->sessions.insert(this->weak_from_this());
    }
    if (stopped) return Shutdown();
    if (over_limit) {
      // A TLS client could not read a 503 before its handshake: just close.
      if constexpr (std::is_same_v<Stream, TlsStream>) return Shutdown();
      HttpServer::Response r;
      r.status = 503;
      r.body = ErrorBody(503, "too many connections; try again later");
      net::dispatch(stream_.get_executor(),
                    [self = this->shared_from_this(), r = std::move(r)]() mutable {
                      self->Write(std::move(r), /*keep_alive=*/false, 11);
                    });
      return;
    }
    if constexpr (std::is_same_v<Stream, TlsStream>) {
      net::dispatch(stream_.get_executor(), [self = this->shared_from_this()] {
        self->ExpireAfterTimeout();
        self->stream_.async_handshake(ssl::stream_base::server, [self](beast::error_code ec) {
          // Not TLS, a certificate refused, or too slow.
          if (ec) return self->Close();
          self->Read();
        });
      });
    } else {
      net::dispatch(stream_.get_executor(),
                    beast::bind_front_handler(&Session::Read, this->shared_from_this()));
    }
  }

  // Closes the connection (on its executor).
  void Shutdown() override {
    net::post(stream_.get_executor(), [self = this->shared_from_this()] { self->Close(); });
  }

 private:
  void Read() {
    // A new request on a kept-alive connection: nothing of the last one's.
    answering_ = false;
    linger_after_read_ = false;
    head_parser_.emplace();
    head_parser_->header_limit(static_cast<std::uint32_t>(shared_->options.max_header_bytes));
    // Which body limit applies is known after the head (OnHeader).
    head_parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
    ExpireAfterTimeout();
    bhttp::async_read_header(
        stream_, buffer_, *head_parser_,
        beast::bind_front_handler(&Session::OnHeader, this->shared_from_this()));
  }

  // A request that could not be read: the answer (none after a timeout or
  // a hang-up) and the close.
  void Refuse(beast::error_code ec, uint64_t body_limit) {
    if (ec == bhttp::error::end_of_stream || shared_->stopped) return Close();
    int status = 400;
    std::string why = absl::StrCat("the request is not valid HTTP/1.1: ", ec.message());
    // A timeout has closed the socket already (beast::tcp_stream): no answer.
    if (ec == beast::error::timeout) return Close();
    if (ec == bhttp::error::header_limit) {
      status = 431;
      why = absl::StrCat("the request headers are larger than ", shared_->options.max_header_bytes,
                         " bytes");
    } else if (ec == bhttp::error::body_limit) {
      status = 413;
      why = absl::StrCat("the request body is larger than ", body_limit, " bytes");
    } else if (ec == net::error::eof || ec == net::error::connection_reset ||
               ec == net::error::operation_aborted) {
      return Close();
    }
    linger_ = true;  // the rest of the request may be on its way
    HttpServer::Response r;
    r.status = status;
    r.body = ErrorBody(status, why);
    Write(std::move(r), /*keep_alive=*/false, 11);
  }

  void OnHeader(beast::error_code ec, std::size_t) {
    if (ec) return Refuse(ec, shared_->options.max_body_bytes);
    const auto& head = head_parser_->get();
    HttpServer::Request request;
    request.method = std::string(head.method_string());
    request.target = std::string(head.target());
    request.authorization = std::string(head[bhttp::field::authorization]);
    request.content_type = std::string(head[bhttp::field::content_type]);
    request.host = std::string(head[bhttp::field::host]);
    request.last_event_id = std::string(head["Last-Event-ID"]);
    request.upload_header = std::string(head["Kaizen-Upload-Header"]);
    keep_alive_ = head.keep_alive();
    version_ = head.version();
    if (head.count(bhttp::field::host) > 1) {
      return RefuseWith(400, "the request has more than one Host header");
    }
    // Beast decodes chunked framing only: another coding would be stored as
    // it came, and a body whose last coding is not chunked has no length a
    // proxy in front would agree on (request smuggling). So exactly one
    // Transfer-Encoding, "chunked", or none.
    if (head.count(bhttp::field::transfer_encoding) > 0 &&
        (head.count(bhttp::field::transfer_encoding) > 1 ||
         !absl::EqualsIgnoreCase(absl::StripAsciiWhitespace(absl::string_view(
                                     head[bhttp::field::transfer_encoding].data(),
                                     head[bhttp::field::transfer_encoding].size())),
                                 "chunked"))) {
      return RefuseWith(
          head_parser_->chunked() ? 501 : 400,
          absl::StrCat("Transfer-Encoding \"", std::string(head[bhttp::field::transfer_encoding]),
                       "\" is not supported; send chunked or a Content-Length"));
    }
    // HTTP/1.0 has no 100 Continue: its client sends the body anyway.
    expect_continue_ = version_ >= 11 && beast::iequals(head[bhttp::field::expect], "100-continue");
    head_fields_ = static_cast<size_t>(std::distance(head.begin(), head.end()));
    framing_ = 0;
    const bool streamed = shared_->options.streams_body && shared_->options.streams_body(request);
    const uint64_t limit =
        streamed ? shared_->options.max_streamed_body_bytes : shared_->options.max_body_bytes;
    // The parser checks a declared length against its limit as it reads the
    // head, and a chunked body as it comes (after the limit is set below).
    if (head_parser_->content_length().value_or(0) > limit) {
      return Refuse(bhttp::error::body_limit, limit);
    }
    if (streamed) {
      // The handler reads the body; the connection ends with its answer.
      keep_alive_ = false;
      body_parser_.emplace(std::move(*head_parser_));
      body_parser_->body_limit(shared_->options.max_streamed_body_bytes);
      request.body_reader = std::make_shared<Reader>(this->weak_from_this());
      return Dispatch(std::move(request));
    }
    if (head_parser_->is_done()) return Dispatch(std::move(request));  // no body
    parser_.emplace(std::move(*head_parser_));
    parser_->body_limit(shared_->options.max_body_bytes);
    auto pending = std::make_shared<HttpServer::Request>(std::move(request));
    Continue([self = this->shared_from_this(), pending] { self->ReadBody(pending); });
  }

  // Reads the rest of a whole body, a buffer at a time: each read must bring
  // something within the request timeout (the whole request must arrive
  // within it too), and the framing is checked as it comes.
  void ReadBody(std::shared_ptr<HttpServer::Request> request) {
    if (closed_) return;
    bhttp::async_read_some(
        stream_, buffer_, *parser_,
        [self = this->shared_from_this(), request](beast::error_code ec, std::size_t n) {
          if (ec) return self->Refuse(ec, self->shared_->options.max_body_bytes);
          if (absl::Status framing =
                  self->CheckFraming(n, self->parser_->get().body().size(), self->parser_->get());
              !framing.ok()) {
            return self->RefuseWith(400, framing.message());
          }
          if (!self->parser_->is_done()) return self->ReadBody(request);
          request->body = std::move(self->parser_->get().body());
          self->Dispatch(std::move(*request));
        });
  }

  // A chunked body's framing (chunk sizes, extensions, trailer fields) is
  // read into memory beside the body: it may add at most kFramingBytes and
  // an eighth of the body, and at most kMaxTrailerFields fields. `consumed`:
  // bytes the parser took in the last read; `body`: the body's bytes so far.
  template <typename Message>
  absl::Status CheckFraming(size_t consumed, uint64_t body, const Message& message) {
    framing_ += consumed;
    if (framing_ > body + kFramingBytes + body / 8) {
      return absl::InvalidArgumentError(
          "the request's chunked framing (chunk extensions, trailers) is too large for its body");
    }
    if (static_cast<size_t>(std::distance(message.begin(), message.end())) >
        head_fields_ + kMaxTrailerFields) {
      return absl::InvalidArgumentError(
          absl::StrCat("the request has more than ", kMaxTrailerFields, " trailer fields"));
    }
    return absl::OkStatus();
  }

  // Answers "100 Continue" first when the client waits for it before its
  // body, then reads on.
  // Not once the request is answered (an upload refused at its header).
  // One write at a time: an answer that comes meanwhile waits for it
  // (Write). `then` runs in any case (it sees a closed connection).
  void Continue(std::function<void()> then) {
    if (!expect_continue_ || answering_) {
      expect_continue_ = false;
      return then();
    }
    expect_continue_ = false;
    continue_pending_ = true;
    net::async_write(stream_, net::buffer(kContinue, sizeof(kContinue) - 1),
                     [self = this->shared_from_this(), then = std::move(then)](beast::error_code ec,
                                                                               std::size_t) {
                       self->continue_pending_ = false;
                       if (ec) self->Close();
                       if (self->deferred_answer_) {
                         std::function<void()> answer = std::move(self->deferred_answer_);
                         self->deferred_answer_ = nullptr;
                         if (!ec) answer();
                       }
                       then();
                     });
  }

  // The server's own refusal of a request with `status`.
  void RefuseWith(int status, absl::string_view why) {
    linger_ = true;
    HttpServer::Response r;
    r.status = status;
    r.body = ErrorBody(status, why);
    Write(std::move(r), /*keep_alive=*/false, version_);
  }

  // Hands the request to the handler.
  void Dispatch(HttpServer::Request request) {
    if (shared_->stopped) return Close();
    // The handler may take long (an evaluation); the deadline is for reading.
    Tcp(stream_).expires_never();
    {
      absl::MutexLock lock(&shared_->mu);
      if (shared_->stopped) return Close();
      shared_->waiting.insert(this->shared_from_this());
    }
    std::weak_ptr<Session> weak = this->weak_from_this();
    shared_->handler(std::move(request), [weak](HttpServer::Response r) {
      if (std::shared_ptr<Session> self = weak.lock()) return self->Answer(std::move(r));
      if (r.stream) r.stream->Cancel();
    });
  }

  // A request body read by its handler, one piece per Read, on the
  // connection's strand.
  class Reader : public HttpServer::BodyReader {
   public:
    explicit Reader(std::weak_ptr<Session> session) : session_(std::move(session)) {}
    void Read(Deliver deliver) override {
      std::shared_ptr<Session> self = session_.lock();
      // Once stopped, the threads may be gone (see Pull).
      if (self == nullptr || self->shared_->stopped) {
        return deliver(absl::CancelledError("the HTTP server is stopping"));
      }
      // Delivers once, even when the server stops before the read runs.
      auto once = std::make_shared<Once>(std::move(deliver));
      net::post(self->stream_.get_executor(),
                [self, once] { self->ReadPiece(std::exchange(once->deliver, nullptr)); });
    }

   private:
    struct Once {
      explicit Once(Deliver d) : deliver(std::move(d)) {}
      ~Once() {
        if (deliver) deliver(absl::CancelledError("the HTTP server stopped"));
      }
      Deliver deliver;
    };
    std::weak_ptr<Session> session_;
  };

  void ReadPiece(HttpServer::BodyReader::Deliver deliver) {
    if (closed_) return deliver(absl::CancelledError("the connection is closed"));
    if (answering_) {
      return deliver(absl::CancelledError("the request was answered before its body was read"));
    }
    if (body_parser_->is_done()) return deliver(std::nullopt);
    if (expect_continue_) {
      return Continue([self = this->shared_from_this(), deliver = std::move(deliver)]() mutable {
        self->ReadPiece(std::move(deliver));
      });
    }
    piece_.resize(shared_->options.body_piece_bytes);
    FillPiece(0, std::move(deliver));
  }

  // Reads into piece_ from `filled` on until it is full or the body ends,
  // one buffer at a time: each read must bring something within the request
  // timeout (a slow client is fine, a silent one is not).
  void FillPiece(size_t filled, HttpServer::BodyReader::Deliver deliver) {
    body_parser_->get().body().data = piece_.data() + filled;
    body_parser_->get().body().size = piece_.size() - filled;
    ExpireAfterTimeout();
    body_read_pending_ = true;
    bhttp::async_read_some(
        stream_, buffer_, *body_parser_,
        [self = this->shared_from_this(), filled, deliver = std::move(deliver)](
            beast::error_code ec, std::size_t n) mutable {
          self->body_read_pending_ = false;
          if (self->answering_) {
            // Answered meanwhile: the answer's write left the lingering to
            // this read's end (one read at a time).
            if (self->linger_after_read_) self->Linger();
            return deliver(
                absl::CancelledError("the request was answered before its body was read"));
          }
          if (ec == bhttp::error::need_buffer) ec = {};  // the piece is full
          Tcp(self->stream_).expires_never();
          const size_t got = self->piece_.size() - filled - self->body_parser_->get().body().size;
          self->body_read_ += got;
          absl::Status why;
          if (ec) {
            why = self->BodyError(ec);
          } else {
            why = self->CheckFraming(n, self->body_read_, self->body_parser_->get());
          }
          if (!why.ok()) {
            // The socket is gone after a timeout or a hang-up; otherwise the
            // handler answers (400, 413) and the connection closes after it.
            if (ec == beast::error::timeout || absl::IsCancelled(why)) self->Close();
            return deliver(why);
          }
          const size_t now = filled + got;
          if (now < self->piece_.size() && !self->body_parser_->is_done()) {
            return self->FillPiece(now, std::move(deliver));
          }
          if (now == 0) return deliver(std::nullopt);
          deliver(std::string(self->piece_.data(), now));
        });
  }

  absl::Status BodyError(beast::error_code ec) const {
    if (ec == bhttp::error::body_limit) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the request body is larger than ", shared_->options.max_streamed_body_bytes, " bytes"));
    }
    if (ec == beast::error::timeout) {
      return absl::DeadlineExceededError(
          absl::StrCat("no byte of the request body came for ",
                       absl::FormatDuration(shared_->options.request_timeout)));
    }
    if (ec == net::error::eof || ec == bhttp::error::partial_message ||
        ec == net::error::connection_reset || ec == net::error::operation_aborted) {
      return absl::CancelledError("the client closed the connection before the whole body came");
    }
    return absl::InvalidArgumentError(
        absl::StrCat("the request body is not valid HTTP/1.1: ", ec.message()));
  }

  // The answer to the request being handled, from any thread.
  void Answer(HttpServer::Response r) {
    std::shared_ptr<Session> self;
    {
      absl::MutexLock lock(&shared_->mu);
      auto it =
          shared_->waiting.find(std::static_pointer_cast<Connection>(this->shared_from_this()));
      if (it != shared_->waiting.end()) {
        self = std::static_pointer_cast<Session>(*it);
        shared_->waiting.erase(it);
      }
    }
    if (self == nullptr) {  // answered already, or stopping
      if (r.stream) r.stream->Cancel();
      return;
    }
    net::post(stream_.get_executor(), [self, r = std::move(r)]() mutable {
      if (r.stream && self->closed_) return r.stream->Cancel();  // Stop() got here first
      if (r.stream) return self->StartStream(std::move(r));
      self->Write(std::move(r), self->keep_alive_, self->version_);
    });
  }

  // A streamed answer: the head, then one chunk per piece of the stream, one
  // write at a time; keep-alive bytes when idle; the last chunk and close at
  // its end. Every step runs on the connection's strand.
  void StartStream(HttpServer::Response r) {
    source_ = std::move(r.stream);
    keepalive_ = std::move(r.keepalive);
    if (shared_->options.stream_send_buffer_bytes > 0) {
      beast::error_code ignored;
      Tcp(stream_).socket().set_option(
          net::socket_base::send_buffer_size(shared_->options.stream_send_buffer_bytes), ignored);
    }
    auto res = Head<bhttp::empty_body>(r, version_);
    // HTTP/1.0 has no chunks: its body ends where the connection does.
    chunked_ = version_ >= 11;
    res->chunked(chunked_);
    res->keep_alive(false);
    auto serializer = std::make_shared<bhttp::response_serializer<bhttp::empty_body>>(*res);
    ExpireAfterTimeout();
    bhttp::async_write_header(
        stream_, *serializer,
        [self = this->shared_from_this(), res, serializer](beast::error_code ec, std::size_t) {
          if (ec) return self->Close();
          Tcp(self->stream_).expires_never();
          self->WatchForHangUp();
          self->ArmKeepalive();
          self->Pull();
        });
  }

  // The client sends nothing more on a streamed answer's connection: any
  // byte, end of file or error from it closes the stream (without this, a
  // client that left is noticed only at a write).
  void WatchForHangUp() {
    stream_.async_read_some(
        net::buffer(hangup_byte_),
        [self = this->shared_from_this()](beast::error_code, std::size_t) { self->Close(); });
  }

  void ArmKeepalive() {
    if (keepalive_.empty() || closed_) return;
    if (!keepalive_timer_) keepalive_timer_.emplace(stream_.get_executor());
    // Due when the stream has been idle for the interval: after the last write.
    const auto interval = std::chrono::nanoseconds(
        absl::ToInt64Nanoseconds(shared_->options.stream_keepalive_interval));
    // While a write is pending (a slow client) there is nothing to add.
    const auto idle = std::chrono::steady_clock::now() - last_write_;
    keepalive_timer_->expires_after(writing_ || !outbox_.empty()
                                        ? std::chrono::steady_clock::duration(interval)
                                        : std::max<std::chrono::steady_clock::duration>(
                                              interval - idle, std::chrono::milliseconds(1)));
    keepalive_timer_->async_wait([self = this->shared_from_this()](beast::error_code ec) {
      if (ec || self->closed_) return;
      const auto idle = std::chrono::steady_clock::now() - self->last_write_;
      if (!self->writing_ && self->outbox_.empty() &&
          idle >= std::chrono::nanoseconds(
                      absl::ToInt64Nanoseconds(self->shared_->options.stream_keepalive_interval))) {
        self->outbox_.push_back(Piece{std::make_shared<std::string>(self->keepalive_), false});
        self->Flush();
      }
      self->ArmKeepalive();
    });
  }

  void Pull() {
    if (closed_) return;
    std::weak_ptr<Session> weak = this->weak_from_this();
    source_->Next([weak](std::optional<std::string> piece) {
      std::shared_ptr<Session> self = weak.lock();
      // Once stopped, the threads may be gone: a handler posted then would
      // never run and would keep the session (and the io_context) forever.
      if (self == nullptr || self->shared_->stopped) return;
      net::post(self->stream_.get_executor(), [self, piece = std::move(piece)]() mutable {
        if (self->closed_) return;
        const bool last = !piece.has_value();
        // Broken off: no final chunk, so that the client sees it incomplete.
        if (last && self->source_->Failed()) return self->Close();
        self->outbox_.push_back(
            Piece{std::make_shared<std::string>(last ? std::string() : std::move(*piece)), last,
                  /*pulled=*/true});
        self->Flush();
      });
    });
  }

  void Flush() {
    if (writing_ || outbox_.empty() || closed_) return;
    Piece piece = std::move(outbox_.front());
    outbox_.pop_front();
    writing_ = true;
    auto done = [self = this->shared_from_this(), piece](beast::error_code ec, std::size_t) {
      self->writing_ = false;
      self->last_write_ = std::chrono::steady_clock::now();
      if (ec || piece.last) return self->Close();
      Tcp(self->stream_).expires_never();
      if (piece.pulled) self->Pull();
      self->Flush();
    };
    ExpireAfterTimeout();
    if (!chunked_) {
      net::async_write(stream_, net::buffer(*piece.bytes), std::move(done));
    } else if (piece.last) {
      net::async_write(stream_, bhttp::make_chunk_last(), std::move(done));
    } else {
      net::async_write(stream_, bhttp::make_chunk(net::buffer(*piece.bytes)), std::move(done));
    }
  }

  void ExpireAfterTimeout() {
    Tcp(stream_).expires_after(
        std::chrono::nanoseconds(absl::ToInt64Nanoseconds(shared_->options.request_timeout)));
  }

  void Write(HttpServer::Response r, bool keep_alive, unsigned version) {
    answering_ = true;
    if (continue_pending_) {
      // One write at a time: after the 100 Continue (Continue).
      deferred_answer_ = [self = this->shared_from_this(), r = std::move(r), keep_alive,
                          version]() mutable { self->Write(std::move(r), keep_alive, version); };
      return;
    }
    auto res = Head<bhttp::string_body>(r, version);
    // Beast refuses a body with a status that has none (prepare_payload throws).
    if (r.status >= 200 && r.status != 204 && r.status != 304) res->body() = std::move(r.body);
    res->keep_alive(keep_alive && !shared_->stopped);
    res->prepare_payload();
    ExpireAfterTimeout();
    bhttp::async_write(
        stream_, *res, [self = this->shared_from_this(), res](beast::error_code ec, std::size_t) {
          if (!ec && (self->linger_ || (self->body_parser_ && !self->body_parser_->is_done()))) {
            // A body read in flight lingers at its end: one read at a time.
            if (self->body_read_pending_) {
              self->linger_after_read_ = true;
              beast::error_code ignored;
              Tcp(self->stream_).socket().shutdown(tcp::socket::shutdown_send, ignored);
              Tcp(self->stream_).expires_after(kLinger);
              return;
            }
            return self->Linger();
          }
          if (ec || !res->keep_alive()) return self->Close();
          self->Read();
        });
  }

  // An answer given before the handler read the whole body (an upload
  // refused at its header): closing now, with bytes unread, would reset the
  // connection and could destroy the answer before the client reads it. So
  // stop sending, and read and drop what the client still sends, for a
  // little while, before closing.
  void Linger() {
    beast::error_code ignored;
    Tcp(stream_).socket().shutdown(tcp::socket::shutdown_send, ignored);
    Tcp(stream_).expires_after(kLinger);
    piece_.resize(16 << 10);
    DropUnread(0);
  }

  void DropUnread(size_t dropped) {
    if (closed_ || dropped >= kLingerBytes) return Close();
    stream_.async_read_some(
        net::buffer(piece_.data(), piece_.size()),
        [self = this->shared_from_this(), dropped](beast::error_code ec, std::size_t n) {
          if (ec) return self->Close();
          self->DropUnread(dropped + n);
        });
  }

  static constexpr std::chrono::seconds kLinger{2};
  static constexpr size_t kLingerBytes = 64 << 20;

  void Close() {
    if (closed_) return;
    closed_ = true;
    if (keepalive_timer_) keepalive_timer_->cancel();
    if (source_) source_->Cancel();
    beast::error_code ignored;
    Tcp(stream_).socket().shutdown(tcp::socket::shutdown_send, ignored);
    Tcp(stream_).close();
  }

  // Declared first, destroyed last: the socket needs the io_context.
  std::shared_ptr<Shared> shared_;
  std::shared_ptr<ssl::context> tls_;  // of a TLS stream, which refers to it
  Stream stream_;
  // At most kReadBufferBytes: a line (a header, a chunk's size and
  // extensions, a trailer field) that does not fit is refused (400), so no
  // single field reaches Beast's 64 KiB limit on a field (which it throws
  // for).
  beast::flat_buffer buffer_{kReadBufferBytes};
  std::optional<bhttp::request_parser<bhttp::empty_body>> head_parser_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  // A body the handler reads (Reader), and the piece being read.
  std::optional<bhttp::request_parser<bhttp::buffer_body>> body_parser_;
  std::string piece_;
  uint64_t body_read_ = 0;  // of body_parser_'s body
  bool expect_continue_ = false;
  // One read and one write at a time on the stream: a body read in flight
  // (FillPiece), a 100 Continue being written, the answer begun (no more
  // body reads), an answer waiting for the 100 to be written, and a linger
  // left to the body read's end.
  bool body_read_pending_ = false;
  bool continue_pending_ = false;
  bool answering_ = false;
  std::function<void()> deferred_answer_;
  bool linger_after_read_ = false;
  // The answer went out before the whole request came in: read and drop
  // the rest before closing (Linger).
  bool linger_ = false;
  // The request's fields at its head, and the bytes of its body's framing
  // so far (CheckFraming).
  size_t head_fields_ = 0;
  uint64_t framing_ = 0;

  static constexpr size_t kReadBufferBytes = 64 << 10;
  static constexpr char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
  static constexpr uint64_t kFramingBytes = 64 << 10;
  static constexpr size_t kMaxTrailerFields = 16;
  bool keep_alive_ = false;
  unsigned version_ = 11;
  bool closed_ = false;

  // A streamed answer's state (on the strand).
  struct Piece {
    std::shared_ptr<std::string> bytes;
    bool last = false;    // the final, empty chunk
    bool pulled = false;  // from the stream (not keep-alive): ask for the next once written
  };
  std::shared_ptr<HttpServer::Stream> source_;
  std::string keepalive_;
  std::optional<net::steady_timer> keepalive_timer_;
  std::deque<Piece> outbox_;  // at most a piece and a keep-alive
  bool writing_ = false;
  bool chunked_ = true;
  std::chrono::steady_clock::time_point last_write_ = std::chrono::steady_clock::now();
  char hangup_byte_[1];
};

// A server context from the files of `o` (TLS 1.2 or later).
absl::StatusOr<std::shared_ptr<ssl::context>> TlsContext(const HttpServer::Options& o) {
  auto context = std::make_shared<ssl::context>(ssl::context::tls_server);
  context->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                       ssl::context::single_dh_use);
  beast::error_code ec;
  context->use_certificate_chain_file(o.tls_cert, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("HTTP TLS certificate ", o.tls_cert, ": ", ec.message()));
  }
  context->use_private_key_file(o.tls_key, ssl::context::pem, ec);
  if (ec) {
    return absl::InvalidArgumentError(absl::StrCat("HTTP TLS key ", o.tls_key, ": ", ec.message()));
  }
  if (!o.tls_client_ca.empty()) {
    context->load_verify_file(o.tls_client_ca, ec);
    if (ec) {
      return absl::InvalidArgumentError(
          absl::StrCat("HTTP TLS client CA ", o.tls_client_ca, ": ", ec.message()));
    }
    context->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
  }
  return context;
}

}  // namespace

struct HttpServer::Impl {
  std::shared_ptr<Shared> shared = std::make_shared<Shared>();
  std::optional<tcp::acceptor> acceptor;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  std::vector<std::thread> threads;
  int port = 0;
  absl::Mutex stop_mu;

  void Accept() {
    acceptor->async_accept(
        net::make_strand(*shared->ioc), [this](beast::error_code ec, tcp::socket socket) {
          if (shared->stopped || !acceptor->is_open()) return;
          if (ec) {
            // Out of file descriptors, say: try again shortly, not in a loop.
            auto timer = std::make_shared<net::steady_timer>(acceptor->get_executor(),
                                                             std::chrono::milliseconds(100));
            timer->async_wait([this, timer](beast::error_code) { Accept(); });
            return;
          }
          const bool over_limit = shared->open.load() >= shared->options.max_connections;
          std::shared_ptr<ssl::context> tls;
          {
            absl::MutexLock lock(&shared->mu);
            tls = shared->tls;
          }
          if (tls) {
            std::make_shared<Session<TlsStream>>(std::move(socket), shared, std::move(tls))
                ->Run(over_limit);
          } else {
            std::make_shared<Session<beast::tcp_stream>>(std::move(socket), shared, nullptr)
                ->Run(over_limit);
          }
          Accept();
        });
  }
};

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(Options options, Handler handler) {
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("HTTP port ", options.port, " is not in [0, 65535]"));
  }
  if (options.request_timeout <= absl::ZeroDuration() || options.max_connections < 1 ||
      options.max_body_bytes < 1 || options.max_header_bytes < 1 ||
      options.max_header_bytes > HttpServer::kMaxHeaderBytes ||
      options.max_streamed_body_bytes < 1 || options.body_piece_bytes < 1) {
    return absl::InvalidArgumentError(
        "the HTTP request timeout, connection limit and size limits must be positive, and the "
        "header limit at most 32 KiB");
  }
  if (options.tls_cert.empty() != options.tls_key.empty() ||
      (options.tls_cert.empty() && !options.tls_client_ca.empty())) {
    return absl::InvalidArgumentError(
        "HTTP TLS needs both a certificate and a key (and a client CA only with them)");
  }
  std::shared_ptr<ssl::context> tls;
  if (!options.tls_cert.empty()) {
    ASSIGN_OR_RETURN(tls, TlsContext(options));
  }
  auto impl = std::make_unique<Impl>();
  Shared& shared = *impl->shared;
  {
    absl::MutexLock lock(&shared.mu);
    shared.tls = std::move(tls);
  }
  shared.options = std::move(options);
  shared.options.threads = std::max(1, shared.options.threads);
  shared.handler = std::move(handler);
  shared.ioc = std::make_shared<net::io_context>(shared.options.threads);
  impl->acceptor.emplace(net::make_strand(*shared.ioc));
  beast::error_code ec;
  const net::ip::address address = net::ip::make_address(shared.options.host, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("HTTP host \"", shared.options.host, "\" is not an IP address"));
  }
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(shared.options.port));
  impl->acceptor->open(endpoint.protocol(), ec);
  if (!ec) impl->acceptor->set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor->bind(endpoint, ec);
  if (!ec) impl->acceptor->listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("cannot listen for HTTP on ", shared.options.host,
                                               ":", shared.options.port, ": ", ec.message()));
  }
  impl->port = impl->acceptor->local_endpoint().port();
  impl->work.emplace(shared.ioc->get_executor());
  impl->Accept();
  for (int i = 0; i < shared.options.threads; ++i) {
    impl->threads.emplace_back([ioc = shared.ioc] {
      // A handler that throws (a bug, or a Beast limit not foreseen) costs
      // its connection, not the process.
      for (;;) {
        try {
          ioc->run();
          return;
        } catch (const std::exception& e) {
          common::LogError("an HTTP connection failed", {{"error", e.what()}});
        }
      }
    });
  }
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::StopAccepting() {
  net::post(impl_->acceptor->get_executor(), [impl = impl_.get()] {
    beast::error_code ignored;
    impl->acceptor->close(ignored);
  });
}

int HttpServer::port() const { return impl_->port; }

absl::Status HttpServer::ReloadTls() {
  Shared& shared = *impl_->shared;
  if (shared.options.tls_cert.empty()) {
    return absl::FailedPreconditionError("this HTTP server has no TLS");
  }
  ASSIGN_OR_RETURN(std::shared_ptr<ssl::context> tls, TlsContext(shared.options));
  absl::MutexLock lock(&shared.mu);
  shared.tls = std::move(tls);
  return absl::OkStatus();
}

void HttpServer::Stop() {
  absl::MutexLock stopping(&impl_->stop_mu);  // a second Stop() waits for the first
  Shared& shared = *impl_->shared;
  {
    absl::MutexLock lock(&shared.mu);
    if (shared.stopped) return;
    shared.stopped = true;
  }
  net::post(impl_->acceptor->get_executor(), [impl = impl_.get()] {
    beast::error_code ignored;
    impl->acceptor->close(ignored);
  });
  std::set<std::shared_ptr<Connection>> waiting;
  std::vector<std::shared_ptr<Connection>> open;
  {
    absl::MutexLock lock(&shared.mu);
    for (const std::weak_ptr<Connection>& weak : shared.sessions) {
      if (std::shared_ptr<Connection> s = weak.lock()) open.push_back(std::move(s));
    }
    waiting.swap(shared.waiting);
  }
  // Outside the lock: a connection's destructor takes it.
  for (const std::shared_ptr<Connection>& s : open) s->Shutdown();
  open.clear();
  // Every socket is closing: the threads run out of work and return.
  impl_->work.reset();
  for (std::thread& t : impl_->threads) t.join();
  impl_->threads.clear();
  waiting.clear();
}

}  // namespace kaizen::http
