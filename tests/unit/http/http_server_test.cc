#include "server/http/http_server.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "absl/synchronization/notification.h"
#include "tests/test_util/http_client.h"
#include "tests/test_util/http_get.h"

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

}  // namespace
}  // namespace kaizen::http
