#include "tests/test_util/http_client.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdint>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"

namespace kaizen::test_util {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;

HttpAnswer HttpRequest(int port, const std::string& method, const std::string& target,
                       const std::string& body,
                       const std::vector<std::pair<std::string, std::string>>& headers) {
  HttpAnswer answer;
  try {
    net::io_context ioc;
    beast::tcp_stream stream(ioc);
    stream.expires_after(std::chrono::minutes(2));
    stream.connect(net::ip::tcp::endpoint(net::ip::make_address("127.0.0.1"),
                                          static_cast<unsigned short>(port)));
    bhttp::request<bhttp::string_body> req(bhttp::string_to_verb(method), target, 11);
    if (req.method() == bhttp::verb::unknown) req.method_string(method);
    req.set(bhttp::field::host, "127.0.0.1");
    for (const auto& [name, value] : headers) req.set(name, value);
    req.body() = body;
    req.prepare_payload();
    bhttp::write(stream, req);
    beast::flat_buffer buffer;
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(1 << 30);
    bhttp::read(stream, buffer, parser);
    const bhttp::response<bhttp::string_body>& res = parser.get();
    answer.status = static_cast<int>(res.result_int());
    for (const auto& field : res) {
      answer.headers[absl::AsciiStrToLower(std::string(field.name_string()))] =
          std::string(field.value());
    }
    answer.body = res.body();
    beast::error_code ignored;
    stream.socket().shutdown(net::ip::tcp::socket::shutdown_both, ignored);
  } catch (const std::exception& e) {
    answer.status = 0;
    answer.error = e.what();
  }
  return answer;
}

HttpAnswer PostJson(int port, const std::string& target, const std::string& json,
                    const std::string& token) {
  std::vector<std::pair<std::string, std::string>> headers = {{"Content-Type", "application/json"}};
  if (!token.empty()) headers.emplace_back("Authorization", "Bearer " + token);
  return HttpRequest(port, "POST", target, json, headers);
}

struct SseStream::Impl {
  net::io_context ioc;
  beast::tcp_stream stream{ioc};
  beast::flat_buffer buffer;
  bhttp::response_parser<bhttp::string_body> parser;
  int status = 0;
  std::map<std::string, std::string> headers;
  size_t consumed = 0;  // of the parser's body
  int comments = 0;
  std::string error;
  bool open = false;
};

SseStream::SseStream(int port, const std::string& target, const std::string& json,
                     const std::string& token, const std::string& last_event_id)
    : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  try {
    s.stream.expires_after(std::chrono::seconds(30));
    s.stream.connect(net::ip::tcp::endpoint(net::ip::make_address("127.0.0.1"),
                                            static_cast<unsigned short>(port)));
    bhttp::request<bhttp::string_body> req(bhttp::verb::post, target, 11);
    req.set(bhttp::field::host, "127.0.0.1");
    req.set(bhttp::field::content_type, "application/json");
    req.set(bhttp::field::accept, "text/event-stream");
    if (!token.empty()) req.set(bhttp::field::authorization, "Bearer " + token);
    if (!last_event_id.empty()) req.set("Last-Event-ID", last_event_id);
    req.body() = json;
    req.prepare_payload();
    bhttp::write(s.stream, req);
    s.parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    bhttp::read_header(s.stream, s.buffer, s.parser);
    s.status = static_cast<int>(s.parser.get().result_int());
    for (const auto& field : s.parser.get()) {
      s.headers[absl::AsciiStrToLower(std::string(field.name_string()))] =
          std::string(field.value());
    }
    s.open = true;
    if (!absl::StartsWith(s.headers["content-type"], "text/event-stream")) {
      // An error answer: read its whole body.
      bhttp::read(s.stream, s.buffer, s.parser);
      s.open = false;
    }
  } catch (const std::exception& e) {
    s.status = 0;
    s.error = e.what();
    s.open = false;
  }
}

SseStream::~SseStream() { Close(); }

int SseStream::status() const { return impl_->status; }
const std::map<std::string, std::string>& SseStream::headers() const { return impl_->headers; }
std::string SseStream::body() const { return impl_->parser.get().body(); }
int SseStream::comments() const { return impl_->comments; }
const std::string& SseStream::error() const { return impl_->error; }

void SseStream::Close() {
  beast::error_code ignored;
  impl_->stream.socket().shutdown(net::ip::tcp::socket::shutdown_both, ignored);
  impl_->stream.socket().close(ignored);
  impl_->open = false;
}

std::optional<SseEvent> SseStream::Next(std::chrono::milliseconds timeout) {
  Impl& s = *impl_;
  s.error.clear();
  while (true) {
    // A whole frame ends with a blank line.
    std::string& body = s.parser.get().body();
    const size_t end = body.find("\n\n", s.consumed);
    if (end != std::string::npos) {
      const std::string frame = body.substr(s.consumed, end - s.consumed);
      s.consumed = end + 2;
      SseEvent event;
      bool any = false;
      for (absl::string_view line : absl::StrSplit(frame, '\n')) {
        if (absl::StartsWith(line, ":")) {
          ++s.comments;
        } else if (absl::ConsumePrefix(&line, "id: ")) {
          event.id = std::string(line);
          any = true;
        } else if (absl::ConsumePrefix(&line, "event: ")) {
          event.event = std::string(line);
          any = true;
        } else if (absl::ConsumePrefix(&line, "data: ")) {
          event.data = std::string(line);
          any = true;
        }
      }
      if (any) return event;
      continue;
    }
    if (!s.open || s.parser.is_done()) return std::nullopt;
    try {
      s.stream.expires_after(timeout);
      bhttp::read_some(s.stream, s.buffer, s.parser);
    } catch (const std::exception& e) {
      s.error = e.what();
      s.open = false;
      return std::nullopt;
    }
  }
}

}  // namespace kaizen::test_util
