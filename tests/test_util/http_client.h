// A blocking HTTP/1.1 client for tests (Boost.Beast): one request on a new
// connection to 127.0.0.1, the whole answer back.
#pragma once

#include <map>
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

}  // namespace kaizen::test_util
