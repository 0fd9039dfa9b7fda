#include "server/metrics/metrics_http_server.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>

#include "prometheus/metric_family.h"
#include "tests/test_util/http_get.h"

namespace kaizen::metrics {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

std::vector<prometheus::MetricFamily> OneCounter(double value) {
  prometheus::MetricFamily family;
  family.name = "kaizen_test_total";
  family.help = "a counter for the test";
  family.type = prometheus::MetricType::Counter;
  prometheus::ClientMetric metric;
  metric.counter.value = value;
  family.metric.push_back(metric);
  return {family};
}

// Whether the server closes `fd` within `ms` (reads return 0).
bool ClosedWithin(int fd, int ms) {
  pollfd p{fd, POLLIN, 0};
  while (poll(&p, 1, ms) > 0) {
    char buf[4096];
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return true;
  }
  return false;
}

class MetricsHttpServerTest : public ::testing::Test {
 protected:
  void Start(MetricsHttpServer::Options options = {}) {
    absl::StatusOr<std::unique_ptr<MetricsHttpServer>> server = MetricsHttpServer::Start(
        "127.0.0.1", 0, [this] { return OneCounter(++scrapes_); }, options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }
  std::atomic<int> scrapes_{0};
  std::unique_ptr<MetricsHttpServer> server_;
};

TEST_F(MetricsHttpServerTest, ServesWhatTheCollectorReturnsAtEachScrape) {
  Start();
  ASSERT_GT(server_->port(), 0);
  const std::string first = test_util::HttpGet(server_->port(), "/metrics");
  EXPECT_THAT(first, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(first, HasSubstr("Content-Type: text/plain; version=0.0.4"));
  EXPECT_THAT(first, HasSubstr("# TYPE kaizen_test_total counter\nkaizen_test_total 1\n"));
  EXPECT_THAT(test_util::HttpGet(server_->port(), "/metrics?x=1"),
              HasSubstr("kaizen_test_total 2"));
}

TEST_F(MetricsHttpServerTest, OtherPathsAndMethodsAreRefused) {
  Start();
  EXPECT_THAT(test_util::HttpGet(server_->port(), "/"), StartsWith("HTTP/1.1 404 Not Found"));
  const int fd = test_util::ConnectLoopback(server_->port());
  ASSERT_GE(fd, 0);
  const std::string post = "POST /metrics HTTP/1.0\r\n\r\n";
  ASSERT_EQ(send(fd, post.data(), post.size(), MSG_NOSIGNAL), static_cast<ssize_t>(post.size()));
  char buf[256] = {};
  ASSERT_GT(recv(fd, buf, sizeof(buf) - 1, MSG_WAITALL), 0);
  EXPECT_THAT(std::string(buf), StartsWith("HTTP/1.1 405 Method Not Allowed"));
  close(fd);
  EXPECT_EQ(scrapes_, 0);
}

TEST_F(MetricsHttpServerTest, ASilentClientDelaysNobodyAndIsClosedAtItsDeadline) {
  MetricsHttpServer::Options options;
  options.request_timeout = absl::Milliseconds(300);
  Start(options);
  const int silent = test_util::ConnectLoopback(server_->port());
  ASSERT_GE(silent, 0);
  EXPECT_THAT(test_util::HttpGet(server_->port(), "/metrics"), HasSubstr("kaizen_test_total 1"));
  EXPECT_TRUE(ClosedWithin(silent, 10000));
  close(silent);
}

TEST_F(MetricsHttpServerTest, AnOversizedRequestIsAnsweredAndClosed) {
  Start();
  const int fd = test_util::ConnectLoopback(server_->port());
  ASSERT_GE(fd, 0);
  const std::string junk = "GET /" + std::string(20000, 'a');  // never ends its headers
  send(fd, junk.data(), junk.size(), MSG_NOSIGNAL);
  EXPECT_TRUE(ClosedWithin(fd, 10000));
  close(fd);
}

TEST(MetricsHttpServerStartTest, AHostThatIsNotAnIpv4AddressIsRefused) {
  absl::StatusOr<std::unique_ptr<MetricsHttpServer>> server =
      MetricsHttpServer::Start("localhost", 0, [] { return OneCounter(0); }, {});
  ASSERT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(server.status().message(), HasSubstr("\"localhost\""));
}

}  // namespace
}  // namespace kaizen::metrics
