#include "server/metrics/metrics_http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "prometheus/text_serializer.h"

namespace kaizen::metrics {
namespace {
// A request line and headers larger than this are not a scrape.
constexpr size_t kMaxRequestBytes = 8192;
// How often the loop looks at stopping_ when nothing else happens.
constexpr absl::Duration kStopCheck = absl::Milliseconds(200);
}  // namespace

struct MetricsHttpServer::Connection {
  int fd;
  absl::Time deadline;
  std::string request;
  std::string response;  // non-empty once the request is whole
  size_t sent = 0;
};

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(const std::string& host,
                                                                            int port,
                                                                            CollectFn collect,
                                                                            Options options) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("socket: ", std::strerror(errno)));
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat("metrics host \"", host, "\" is not an IPv4 address"));
  }
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(fd, 16) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const std::string err = std::strerror(errno);
    close(fd);
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", host, ":", port, ": ", err));
  }
  options.max_connections = std::max(1, options.max_connections);
  return std::unique_ptr<MetricsHttpServer>(
      new MetricsHttpServer(fd, ntohs(addr.sin_port), std::move(collect), options));
}

MetricsHttpServer::MetricsHttpServer(int fd, int port, CollectFn collect, Options options)
    : listen_fd_(fd), port_(port), collect_(std::move(collect)), options_(options) {
  thread_ = std::thread([this] { Serve(); });
}

MetricsHttpServer::~MetricsHttpServer() {
  stopping_ = true;
  shutdown(listen_fd_, SHUT_RDWR);
  thread_.join();
  close(listen_fd_);
}

void MetricsHttpServer::Serve() {
  std::vector<Connection> conns;
  std::vector<pollfd> fds;
  while (!stopping_) {
    // The listening socket is polled only while there is room; a negative
    // fd makes poll() skip it.
    const bool room = static_cast<int>(conns.size()) < options_.max_connections;
    fds.assign(1, pollfd{room ? listen_fd_ : -1, POLLIN, 0});
    absl::Duration wait = kStopCheck;
    const absl::Time now = absl::Now();
    for (const Connection& c : conns) {
      fds.push_back(pollfd{c.fd, static_cast<short>(c.response.empty() ? POLLIN : POLLOUT), 0});
      wait = std::min(wait, std::max(absl::ZeroDuration(), c.deadline - now));
    }
    const int ready =
        poll(fds.data(), fds.size(), static_cast<int>(absl::ToInt64Milliseconds(wait)) + 1);
    if (ready < 0 && errno != EINTR) break;
    const absl::Time after = absl::Now();
    size_t kept = 0;
    for (size_t i = 0; i < conns.size(); ++i) {
      Connection& c = conns[i];
      const short ev = fds[i + 1].revents;
      bool open = after < c.deadline;  // the whole-request deadline, however busy
      if (open && ev != 0) {
        open = c.response.empty() ? OnReadable(&c) : OnWritable(&c);
      }
      if (open) {
        if (kept != i) conns[kept] = std::move(c);
        ++kept;
      } else {
        close(c.fd);
      }
    }
    conns.resize(kept);
    if (room && (fds[0].revents & POLLIN) != 0) {
      const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd >= 0) conns.push_back(Connection{fd, after + options_.request_timeout, "", "", 0});
    }
  }
  for (const Connection& c : conns) close(c.fd);
}

bool MetricsHttpServer::OnReadable(Connection* c) {
  char buf[2048];
  const ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
  if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
  if (n > 0) c->request.append(buf, static_cast<size_t>(n));
  const bool whole = c->request.find("\r\n\r\n") != std::string::npos;
  // The client finished sending (n == 0) or sent too much: answer what came.
  if (!whole && n > 0 && c->request.size() < kMaxRequestBytes) return true;
  c->response = Respond(c->request);
  return OnWritable(c);
}

bool MetricsHttpServer::OnWritable(Connection* c) {
  while (c->sent < c->response.size()) {
    const ssize_t n =
        send(c->fd, c->response.data() + c->sent, c->response.size() - c->sent, MSG_NOSIGNAL);
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
    c->sent += static_cast<size_t>(n);
  }
  return false;  // all sent: "Connection: close"
}

std::string MetricsHttpServer::Respond(const std::string& request) {
  std::string status = "200 OK";
  std::string body;
  std::string type = "text/plain; version=0.0.4; charset=utf-8";
  if (absl::StartsWith(request, "GET /metrics ") || absl::StartsWith(request, "GET /metrics?")) {
    body = prometheus::TextSerializer().Serialize(collect_());
  } else if (absl::StartsWith(request, "GET ")) {
    status = "404 Not Found";
    body = "only /metrics is served here\n";
  } else {
    status = "405 Method Not Allowed";
    body = "only GET /metrics is served here\n";
  }
  return absl::StrCat("HTTP/1.1 ", status, "\r\nContent-Type: ", type,
                      "\r\nContent-Length: ", body.size(), "\r\nConnection: close\r\n\r\n", body);
}

}  // namespace kaizen::metrics
