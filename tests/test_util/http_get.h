// A minimal HTTP/1.0 GET on 127.0.0.1, for tests that read /metrics.
#pragma once

#include <string>

namespace kaizen::testing {

// The whole response (status line, headers and body), or "" when nothing
// listens on `port`.
std::string HttpGet(int port, const std::string& path);

}  // namespace kaizen::testing
