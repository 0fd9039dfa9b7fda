// A blocking HTTP/1.1 client for tests (Boost.Beast): one request on a new
// connection to 127.0.0.1, the whole answer back.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kaizen::test_util {

struct HttpAnswer {
  // 0 when the connection failed or the answer was not HTTP (see error).
  int status = 0;
  // Header names lower-cased.
  std::map<std::string, std::string> headers;
  std::string body;
  std::string error;
};

HttpAnswer HttpRequest(int port, const std::string& method, const std::string& target,
                       const std::string& body = "",
                       const std::vector<std::pair<std::string, std::string>>& headers = {});

// POST `json` to `target` as application/json, with a bearer token if given.
HttpAnswer PostJson(int port, const std::string& target, const std::string& json,
                    const std::string& token = "");

// One Server-Sent Event.
struct SseEvent {
  std::string id;
  std::string event;
  std::string data;
};

// A streamed answer read as it comes: the head first, then events one by
// one (the chunked body decoded by Beast, frames split here).
class SseStream {
 public:
  // POSTs `json` to `target` (with a bearer token and a Last-Event-ID if
  // given) and reads the answer's head. status() is 0 when that failed.
  SseStream(int port, const std::string& target, const std::string& json,
            const std::string& token = "", const std::string& last_event_id = "");
  ~SseStream();

  int status() const;
  const std::map<std::string, std::string>& headers() const;
  // The body so far when the answer is not a stream (an error's JSON).
  std::string body() const;
  // The next event, or nullopt at the end of the stream, on an error or
  // after `timeout` (see error()). Comments (keep-alives) and the retry
  // field are skipped; they are counted in comments().
  std::optional<SseEvent> Next(std::chrono::milliseconds timeout = std::chrono::seconds(60));
  int comments() const;
  // Why the last Next() returned nullopt ("" at a clean end).
  const std::string& error() const;
  // Closes the connection now.
  void Close();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kaizen::test_util
