// Plain TCP on 127.0.0.1 for tests: a minimal HTTP/1.0 GET (for /metrics)
// and a raw connection (for clients that misbehave on purpose).
#pragma once

#include <string>

namespace kaizen::test_util {

// The whole response (status line, headers and body), or "" when nothing
// listens on `port`.
std::string HttpGet(int port, const std::string& path);

// A blocking TCP connection to 127.0.0.1:port (close it), or -1.
int ConnectLoopback(int port);

}  // namespace kaizen::test_util
