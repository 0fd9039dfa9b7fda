#include "server/http/http_server.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "tests/test_util/http_client.h"
#include "tests/test_util/http_get.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/python.h"
#include "tests/test_util/temp_dir.h"
#include "tests/test_util/test_certs.h"

namespace kaizen::http {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<HttpServer> StartOrDie(HttpServer::Options o, HttpServer::Handler h) {
  o.host = "127.0.0.1";
  o.port = 0;
  absl::StatusOr<std::unique_ptr<HttpServer>> s = HttpServer::Start(o, std::move(h));
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *std::move(s) : nullptr;
}

TEST(HttpServerTest, HandsTheRequestToTheHandlerAndWritesItsAnswer) {
  auto server = StartOrDie({}, [](HttpServer::Request r, HttpServer::Respond respond) {
    HttpServer::Response a;
    a.status = 201;
    a.content_type = "text/plain";
    a.body =
        r.method + " " + r.target + " " + r.authorization + " " + r.content_type + " " + r.body;
    a.headers.emplace_back("X-Test", "yes");
    respond(std::move(a));
  });
  ASSERT_NE(server, nullptr);
  const test_util::HttpAnswer a =
      test_util::HttpRequest(server->port(), "POST", "/x?y=1", "hello",
                             {{"Authorization", "Bearer t"}, {"Content-Type", "text/plain"}});
  EXPECT_EQ(a.status, 201) << a.error;
  EXPECT_EQ(a.body, "POST /x?y=1 Bearer t text/plain hello");
  EXPECT_EQ(a.headers.at("x-test"), "yes");
  EXPECT_THAT(a.headers.at("content-security-policy"), HasSubstr("default-src 'self'"));
  EXPECT_EQ(a.headers.at("cache-control"), "no-store");
}

TEST(HttpServerTest, AnswersMayComeLaterFromAnotherThread) {
  std::vector<std::thread> threads;
  absl::Mutex mu;
  auto server = StartOrDie({}, [&](HttpServer::Request r, HttpServer::Respond respond) {
    absl::MutexLock lock(&mu);
    threads.emplace_back([r, respond] {
      absl::SleepFor(absl::Milliseconds(50));
      HttpServer::Response a;
      a.body = r.body;
      respond(std::move(a));
    });
  });
  ASSERT_NE(server, nullptr);
  std::vector<std::thread> clients;
  std::atomic<int> right{0};
  for (int i = 0; i < 8; ++i) {
    clients.emplace_back([&, i] {
      const std::string body = "call " + std::to_string(i);
      if (test_util::HttpRequest(server->port(), "POST", "/", body).body == body) ++right;
    });
  }
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(right.load(), 8);
  server->Stop();
  absl::MutexLock lock(&mu);
  for (std::thread& t : threads) t.join();
}

TEST(HttpServerTest, LimitsGet413And431AndTheServerGoesOn) {
  HttpServer::Options o;
  o.max_body_bytes = 100;
  o.max_header_bytes = 1024;
  auto server = StartOrDie(
      o, [](HttpServer::Request, HttpServer::Respond respond) { respond(HttpServer::Response{}); });
  ASSERT_NE(server, nullptr);
  const test_util::HttpAnswer big =
      test_util::HttpRequest(server->port(), "POST", "/", std::string(101, 'x'));
  EXPECT_EQ(big.status, 413);
  EXPECT_THAT(big.body, HasSubstr("100 bytes"));
  EXPECT_EQ(
      test_util::HttpRequest(server->port(), "POST", "/", "", {{"X-Big", std::string(2000, 'h')}})
          .status,
      431);
  EXPECT_EQ(test_util::HttpRequest(server->port(), "POST", "/", std::string(100, 'x')).status, 200);
}

TEST(HttpServerTest, GarbageGets400) {
  auto server = StartOrDie({}, [](HttpServer::Request, HttpServer::Respond respond) {
    respond(HttpServer::Response{});
  });
  ASSERT_NE(server, nullptr);
  const int fd = test_util::ConnectLoopback(server->port());
  ASSERT_GE(fd, 0);
  const std::string garbage = "\x16\x03\x01 not http at all\r\n\r\n";
  ASSERT_EQ(write(fd, garbage.data(), garbage.size()), static_cast<ssize_t>(garbage.size()));
  char buf[1024];
  const ssize_t n = read(fd, buf, sizeof buf);
  close(fd);
  ASSERT_GT(n, 0);
  EXPECT_THAT(std::string(buf, static_cast<size_t>(n)), HasSubstr("HTTP/1.1 400"));
}

TEST(HttpServerTest, StopReturnsWithAnAnswerPendingAndALateAnswerIsDropped) {
  HttpServer::Respond kept;
  absl::Mutex mu;
  absl::Notification asked;
  auto server = StartOrDie({}, [&](HttpServer::Request, HttpServer::Respond respond) {
    absl::MutexLock lock(&mu);
    kept = std::move(respond);
    asked.Notify();
  });
  ASSERT_NE(server, nullptr);
  std::thread client([&] { test_util::HttpRequest(server->port(), "POST", "/", "x"); });
  asked.WaitForNotification();
  // An idle keep-alive connection too.
  const int idle = test_util::ConnectLoopback(server->port());
  server->Stop();
  client.join();
  if (idle >= 0) close(idle);
  absl::MutexLock lock(&mu);
  kept(HttpServer::Response{});  // after Stop: nothing happens
  server.reset();
}

TEST(HttpServerTest, RefusesOptionsOutOfRange) {
  auto start = [](HttpServer::Options o) {
    o.host = "127.0.0.1";
    return HttpServer::Start(o,
                             [](HttpServer::Request, HttpServer::Respond respond) { respond({}); })
        .status()
        .code();
  };
  HttpServer::Options port;
  port.port = 70000;
  EXPECT_EQ(start(port), absl::StatusCode::kInvalidArgument);
  HttpServer::Options timeout;
  timeout.request_timeout = absl::ZeroDuration();
  EXPECT_EQ(start(timeout), absl::StatusCode::kInvalidArgument);
  HttpServer::Options connections;
  connections.max_connections = 0;
  EXPECT_EQ(start(connections), absl::StatusCode::kInvalidArgument);
}

TEST(HttpServerTest, RefusesAHostThatIsNotAnAddress) {
  HttpServer::Options o;
  o.host = "localhost";
  absl::StatusOr<std::unique_ptr<HttpServer>> s =
      HttpServer::Start(o, [](HttpServer::Request, HttpServer::Respond respond) { respond({}); });
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
}

// A stream of scripted pieces, each delivered `delay` after it is asked for
// (from a thread of its own, as a gRPC callback would), that records how it
// was driven.
class ScriptedStream : public HttpServer::Stream {
 public:
  ScriptedStream(std::vector<std::string> pieces, absl::Duration delay, bool end = true)
      : pieces_(std::move(pieces)), delay_(delay), end_(end) {}
  // The last reference may go on one of the delivering threads (a session
  // released there) while another delivery starts a thread: join every
  // thread there is, until none is left, and let this one end by itself.
  ~ScriptedStream() override {
    while (true) {
      std::vector<std::thread> threads;
      {
        absl::MutexLock lock(&mu_);
        threads.swap(threads_);
      }
      if (threads.empty()) return;
      for (std::thread& t : threads) {
        if (t.get_id() == std::this_thread::get_id()) {
          t.detach();
        } else {
          t.join();
        }
      }
    }
  }

  void Next(std::function<void(std::optional<std::string>)> deliver) override {
    absl::MutexLock lock(&mu_);
    if (asked_ != delivered_) overlapping_ = true;  // asked again before delivering
    ++asked_;
    if (next_ == pieces_.size() && !end_) return;  // never delivers: an idle stream
    std::optional<std::string> piece;
    if (next_ < pieces_.size()) piece = pieces_[next_++];
    threads_.emplace_back([this, piece, deliver = std::move(deliver)] {
      absl::SleepFor(delay_);
      {
        absl::MutexLock lock(&mu_);
        ++delivered_;
      }
      deliver(piece);
    });
  }
  void Cancel() override {
    absl::MutexLock lock(&mu_);
    ++cancels_;
    if (!cancelled_.HasBeenNotified()) cancelled_.Notify();
  }

  bool WaitCancelled(absl::Duration d) { return cancelled_.WaitForNotificationWithTimeout(d); }
  int cancels() {
    absl::MutexLock lock(&mu_);
    return cancels_;
  }
  bool overlapping() {
    absl::MutexLock lock(&mu_);
    return overlapping_;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::string> pieces_;
  absl::Duration delay_;
  bool end_;
  size_t next_ ABSL_GUARDED_BY(mu_) = 0;
  int asked_ ABSL_GUARDED_BY(mu_) = 0;
  int delivered_ ABSL_GUARDED_BY(mu_) = 0;
  bool overlapping_ ABSL_GUARDED_BY(mu_) = false;
  int cancels_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Notification cancelled_;
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
};

HttpServer::Handler Streaming(std::shared_ptr<ScriptedStream> stream) {
  return [stream](HttpServer::Request, HttpServer::Respond respond) {
    HttpServer::Response r;
    r.content_type = "text/event-stream";
    r.stream = stream;
    r.keepalive = ": ka\n\n";
    respond(std::move(r));
  };
}

TEST(HttpServerTest, StreamsPiecesInOrderWithKeepalivesWhenIdleThenEnds) {
  auto stream = std::make_shared<ScriptedStream>(
      std::vector<std::string>{"id: 1\ndata: a\n\n", "id: 2\ndata: b\n\n", "data: c\n\n"},
      absl::Milliseconds(250));
  HttpServer::Options o;
  o.stream_keepalive_interval = absl::Milliseconds(60);
  auto server = StartOrDie(o, Streaming(stream));
  ASSERT_NE(server, nullptr);
  test_util::SseStream sse(server->port(), "/s", "{}");
  ASSERT_EQ(sse.status(), 200) << sse.error();
  EXPECT_EQ(sse.headers().at("content-type"), "text/event-stream");
  EXPECT_EQ(sse.headers().at("transfer-encoding"), "chunked");
  EXPECT_THAT(sse.headers().at("content-security-policy"), HasSubstr("default-src 'self'"));
  std::vector<std::string> got;
  while (auto e = sse.Next()) got.push_back(e->id + "/" + e->data);
  EXPECT_EQ(sse.error(), "");
  EXPECT_THAT(got, ::testing::ElementsAre("1/a", "2/b", "/c"));
  // 250 ms per piece against a 60 ms interval: keep-alives in between.
  EXPECT_GE(sse.comments(), 3);
  EXPECT_FALSE(stream->overlapping());
}

TEST(HttpServerTest, AClientThatHangsUpCancelsItsStreamAtOnce) {
  auto stream = std::make_shared<ScriptedStream>(std::vector<std::string>{"data: a\n\n"},
                                                 absl::ZeroDuration(), /*end=*/false);
  HttpServer::Options o;
  o.stream_keepalive_interval = absl::Hours(1);  // no write would notice
  auto server = StartOrDie(o, Streaming(stream));
  ASSERT_NE(server, nullptr);
  test_util::SseStream sse(server->port(), "/s", "{}");
  ASSERT_EQ(sse.status(), 200) << sse.error();
  ASSERT_TRUE(sse.Next().has_value());
  sse.Close();
  EXPECT_TRUE(stream->WaitCancelled(absl::Seconds(10)));
  EXPECT_EQ(stream->cancels(), 1);
}

TEST(HttpServerTest, StopClosesOpenStreamsAndCancelsThem) {
  auto stream = std::make_shared<ScriptedStream>(std::vector<std::string>{}, absl::ZeroDuration(),
                                                 /*end=*/false);
  auto server = StartOrDie({}, Streaming(stream));
  ASSERT_NE(server, nullptr);
  test_util::SseStream sse(server->port(), "/s", "{}");
  ASSERT_EQ(sse.status(), 200) << sse.error();
  server->Stop();
  EXPECT_TRUE(stream->WaitCancelled(absl::Seconds(10)));
  EXPECT_FALSE(sse.Next(std::chrono::seconds(10)).has_value());
}

TEST(HttpServerTest, AStreamedAnswerForAConnectionThatIsGoneIsCancelled) {
  auto stream = std::make_shared<ScriptedStream>(std::vector<std::string>{}, absl::ZeroDuration(),
                                                 /*end=*/false);
  absl::Notification asked;
  HttpServer::Respond later;
  absl::Mutex mu;
  auto server = StartOrDie({}, [&](HttpServer::Request, HttpServer::Respond respond) {
    absl::MutexLock lock(&mu);
    later = std::move(respond);
    asked.Notify();
  });
  ASSERT_NE(server, nullptr);
  std::thread client([&] { test_util::HttpRequest(server->port(), "POST", "/s", "{}"); });
  ASSERT_TRUE(asked.WaitForNotificationWithTimeout(absl::Seconds(10)));
  server->Stop();
  client.join();
  HttpServer::Response r;
  r.stream = stream;
  absl::MutexLock lock(&mu);
  later(std::move(r));
  EXPECT_TRUE(stream->WaitCancelled(absl::Seconds(1)));
}

TEST(HttpServerTest, AnHttp10ClientGetsTheStreamUnchunkedAndEndedByTheClose) {
  auto stream = std::make_shared<ScriptedStream>(
      std::vector<std::string>{"data: a\n\n", "data: b\n\n"}, absl::ZeroDuration());
  auto server = StartOrDie({}, Streaming(stream));
  ASSERT_NE(server, nullptr);
  const int fd = test_util::ConnectLoopback(server->port());
  ASSERT_GE(fd, 0);
  const std::string request = "POST /s HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}";
  ASSERT_EQ(write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
  std::string all;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) all.append(buf, static_cast<size_t>(n));
  close(fd);
  EXPECT_THAT(all, ::testing::StartsWith("HTTP/1.0 200"));
  EXPECT_THAT(all, ::testing::Not(HasSubstr("chunked")));
  EXPECT_THAT(all, ::testing::EndsWith("\r\n\r\ndata: a\n\ndata: b\n\n"));
}

// Sends `request` on a new connection and reads until the server closes it
// (or `limit` passes): everything it answered.
std::string Exchange(int port, const std::string& request,
                     absl::Duration limit = absl::Seconds(20)) {
  const int fd = test_util::ConnectLoopback(port);
  if (fd < 0) return "connect failed";
  timeval tv{static_cast<time_t>(absl::ToInt64Seconds(limit)), 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may refuse before it has read everything
    sent += static_cast<size_t>(n);
  }
  std::string all;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) all.append(buf, static_cast<size_t>(n));
  close(fd);
  return all;
}

HttpServer::Handler BodyLength() {
  return [](HttpServer::Request r, HttpServer::Respond respond) {
    HttpServer::Response a;
    a.content_type = "text/plain";
    a.body = absl::StrCat("got ", r.body.size());
    respond(std::move(a));
  };
}

TEST(HttpServerTest, ChunkedFramingIsBoundedAndNeverTakesTheServerDown) {
  HttpServer::Options o;
  o.max_body_bytes = 1 << 20;
  auto server = StartOrDie(o, BodyLength());
  ASSERT_NE(server, nullptr);
  const std::string head = "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
  // Ordinary extensions and trailers are fine.
  EXPECT_THAT(Exchange(server->port(), head + "2;ext=1\r\n{}\r\n0\r\nX-T: t\r\n\r\n"),
              HasSubstr("got 2"));
  // A trailer field over Beast's 64 KiB field limit (which it throws for).
  EXPECT_THAT(Exchange(server->port(),
                       head + "2\r\n{}\r\n0\r\nX-T: " + std::string(66000, 'a') + "\r\n\r\n"),
              ::testing::StartsWith("HTTP/1.1 400"));
  // Many trailer fields, each small.
  std::string trailers;
  for (int i = 0; i < 40; ++i)
    absl::StrAppend(&trailers, "X-", i, ": ", std::string(100, 'b'), "\r\n");
  EXPECT_THAT(Exchange(server->port(), head + "2\r\n{}\r\n0\r\n" + trailers + "\r\n"),
              HasSubstr("trailer fields"));
  // A chunk extension larger than the read buffer, and framing far larger
  // than its body.
  EXPECT_THAT(
      Exchange(server->port(), head + "2;e=" + std::string(100000, 'c') + "\r\n{}\r\n0\r\n\r\n"),
      ::testing::StartsWith("HTTP/1.1 400"));
  std::string many;
  for (int i = 0; i < 200; ++i) absl::StrAppend(&many, "1;e=", std::string(1000, 'd'), "\r\nx\r\n");
  EXPECT_THAT(Exchange(server->port(), head + many + "0\r\n\r\n"), HasSubstr("framing"));
  // Other codings, and two Host headers.
  EXPECT_THAT(Exchange(server->port(),
                       "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, "
                       "chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"),
              ::testing::StartsWith("HTTP/1.1 501"));
  EXPECT_THAT(Exchange(server->port(),
                       "POST /x HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: 2\r\n\r\n{}"),
              ::testing::StartsWith("HTTP/1.1 400"));
  // A coding that is not chunked: no length to agree on, so no second
  // request smuggled in what would be its body.
  for (const char* te : {"xchunked", "identity", "chunked, chunked", "gzip;chunked"}) {
    const std::string answer = Exchange(
        server->port(), absl::StrCat("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ", te,
                                     "\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\n\r\n"));
    EXPECT_THAT(answer, ::testing::AnyOf(::testing::StartsWith("HTTP/1.1 400"),
                                         ::testing::StartsWith("HTTP/1.1 501")))
        << te;
    EXPECT_EQ(answer.find("HTTP/1.1", 1), std::string::npos) << te << ": " << answer;
  }
  // Still serving.
  EXPECT_EQ(test_util::HttpRequest(server->port(), "POST", "/", "abc").body, "got 3");
}

TEST(HttpServerTest, AClientThatExpectsContinueGetsItBeforeSendingItsBody) {
  auto server = StartOrDie({}, BodyLength());
  ASSERT_NE(server, nullptr);
  const int fd = test_util::ConnectLoopback(server->port());
  ASSERT_GE(fd, 0);
  const std::string head =
      "POST /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n"
      "Connection: close\r\n\r\n";
  ASSERT_EQ(write(fd, head.data(), head.size()), static_cast<ssize_t>(head.size()));
  char buf[4096];
  const ssize_t first = read(fd, buf, sizeof(buf));
  ASSERT_GT(first, 0);
  EXPECT_EQ(std::string(buf, static_cast<size_t>(first)), "HTTP/1.1 100 Continue\r\n\r\n");
  ASSERT_EQ(write(fd, "abc", 3), 3);
  std::string all;
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) all.append(buf, static_cast<size_t>(n));
  close(fd);
  EXPECT_THAT(all, ::testing::StartsWith("HTTP/1.1 200"));
  EXPECT_THAT(all, ::testing::EndsWith("got 3"));
}

// An HTTPS POST of "hello" by Python's http.client trusting only `ca` (and
// with a client certificate when given): "STATUS BODY", or "ERROR ...".
std::string HttpsPost(int port, const std::string& ca, const std::string& cert = "",
                      const std::string& key = "") {
  absl::StatusOr<std::string> out = test_util::RunPython({"-c", R"(
import http.client, ssl, sys
port, ca, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
if cert:
    ctx.load_cert_chain(cert, key)
try:
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=20)
    c.request("POST", "/tls", body="hello")
    r = c.getresponse()
    print(r.status, r.read().decode(), end="")
except Exception as e:
    print("ERROR", type(e).__name__, e, end="")
)",
                                                          std::to_string(port), ca, cert, key});
  return out.ok() ? *out : "python: " + out.status().ToString();
}

HttpServer::Handler SecureEcho() {
  return [](HttpServer::Request r, HttpServer::Respond respond) {
    HttpServer::Response a;
    a.content_type = "text/plain";
    a.body = "secure " + r.body;
    respond(std::move(a));
  };
}

TEST(HttpServerTest, ServesTlsAndReloadsItsCertificate) {
  test_util::TempDir dir;
  absl::StatusOr<test_util::TestCerts> certs = test_util::MakeTestCerts(dir.path());
  ASSERT_TRUE(certs.ok()) << certs.status();
  HttpServer::Options o;
  o.tls_cert = dir.path() + "/http.crt";
  o.tls_key = dir.path() + "/http.key";
  test_util::WriteBinaryFile(o.tls_cert, test_util::ReadText(certs->server_cert));
  test_util::WriteBinaryFile(o.tls_key, test_util::ReadText(certs->server_key));
  auto server = StartOrDie(o, SecureEcho());
  ASSERT_NE(server, nullptr);
  const int port = server->port();
  EXPECT_EQ(HttpsPost(port, certs->ca_cert), "200 secure hello");
  // Plain HTTP gets no answer from a TLS port.
  EXPECT_EQ(test_util::HttpRequest(port, "POST", "/", "x").status, 0);
  // A client that trusts only the other CA refuses this certificate...
  EXPECT_THAT(HttpsPost(port, certs->other_ca_cert), HasSubstr("ERROR"));
  // ... until the files are rotated to one of the other CA and reloaded.
  test_util::WriteBinaryFile(o.tls_cert, test_util::ReadText(certs->other_server_cert));
  test_util::WriteBinaryFile(o.tls_key, test_util::ReadText(certs->other_server_key));
  ASSERT_TRUE(server->ReloadTls().ok());
  EXPECT_EQ(HttpsPost(port, certs->other_ca_cert), "200 secure hello");
  // A broken rotation is refused and the last good files stay in force.
  test_util::WriteBinaryFile(o.tls_key, "not a key");
  EXPECT_EQ(server->ReloadTls().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(HttpsPost(port, certs->other_ca_cert), "200 secure hello");
}

TEST(HttpServerTest, WithAClientCaOnlyClientsWithItsCertificatesConnect) {
  test_util::TempDir dir;
  absl::StatusOr<test_util::TestCerts> certs = test_util::MakeTestCerts(dir.path());
  ASSERT_TRUE(certs.ok()) << certs.status();
  HttpServer::Options o;
  o.tls_cert = certs->server_cert;
  o.tls_key = certs->server_key;
  o.tls_client_ca = certs->ca_cert;
  auto server = StartOrDie(o, SecureEcho());
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(HttpsPost(server->port(), certs->ca_cert, certs->client_cert, certs->client_key),
            "200 secure hello");
  EXPECT_THAT(HttpsPost(server->port(), certs->ca_cert), HasSubstr("ERROR"));
  EXPECT_THAT(
      HttpsPost(server->port(), certs->ca_cert, certs->other_client_cert, certs->other_client_key),
      HasSubstr("ERROR"));

  // Half a TLS configuration is refused at start.
  HttpServer::Options half;
  half.tls_cert = certs->server_cert;
  EXPECT_EQ(HttpServer::Start(half, SecureEcho()).status().code(),
            absl::StatusCode::kInvalidArgument);
  HttpServer::Options bad = o;
  bad.tls_key = certs->other_server_key;  // not the certificate's key
  EXPECT_EQ(HttpServer::Start(bad, SecureEcho()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(HttpServerTest, AStreamedBodyAfterAnotherRequestOnTheSameConnectionIsRead) {
  HttpServer::Options o;
  o.streams_body = [](const HttpServer::Request& head) { return head.target == "/up"; };
  o.body_piece_bytes = 4;
  auto server = StartOrDie(o, [](HttpServer::Request r, HttpServer::Respond respond) {
    if (r.body_reader == nullptr) {
      HttpServer::Response a;
      a.body = absl::StrCat("whole ", r.body.size());
      return respond(std::move(a));
    }
    // Reads every piece, then answers with the total.
    auto total = std::make_shared<size_t>(0);
    auto next = std::make_shared<std::function<void()>>();
    *next = [reader = r.body_reader, respond, total, next] {
      reader->Read([respond, total, next](absl::StatusOr<std::optional<std::string>> piece) {
        HttpServer::Response a;
        if (!piece.ok()) {
          a.body = std::string(piece.status().message());
        } else if (piece->has_value()) {
          *total += (*piece)->size();
          return (*next)();
        } else {
          a.body = absl::StrCat("streamed ", *total);
        }
        *next = nullptr;
        respond(std::move(a));
      });
    };
    (*next)();
  });
  ASSERT_NE(server, nullptr);
  const int fd = test_util::ConnectLoopback(server->port());
  ASSERT_GE(fd, 0);
  const std::string first = "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
  ASSERT_EQ(send(fd, first.data(), first.size(), MSG_NOSIGNAL), static_cast<ssize_t>(first.size()));
  std::string all;
  char buf[4096];
  while (all.find("whole 3") == std::string::npos) {
    const ssize_t n = read(fd, buf, sizeof(buf));
    ASSERT_GT(n, 0) << all;
    all.append(buf, static_cast<size_t>(n));
  }
  const std::string second = "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789";
  ASSERT_EQ(send(fd, second.data(), second.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(second.size()));
  all.clear();
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) all.append(buf, static_cast<size_t>(n));
  close(fd);
  EXPECT_THAT(all, HasSubstr("streamed 10"));
}

}  // namespace
}  // namespace kaizen::http
