// The web console's files (console/, built by Vite into console/dist by
// scripts/setup.sh), read into memory once at start-up and served by path:
// a request can only name a file that was there, so no path reaches the
// file system. "/" is index.html; the hashed files under /assets/ are cached
// for a year, index.html never.
#pragma once

#include <cstddef>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "server/http/http_server.h"

namespace kaizen::http {

class ConsoleAssets {
 public:
  struct Limits {
    size_t max_files = 256;
    size_t max_total_bytes = 32 << 20;
  };

  // Every regular file under `dir` (symbolic links are not followed).
  // NOT_FOUND when `dir` has no index.html; RESOURCE_EXHAUSTED past a limit.
  static absl::StatusOr<ConsoleAssets> Load(const std::string& dir, Limits limits);
  static absl::StatusOr<ConsoleAssets> Load(const std::string& dir) { return Load(dir, Limits()); }

  // GET of a file: 200 with its type; 404 for another path, 405 for another
  // verb. The query string is ignored.
  HttpServer::Response Serve(const HttpServer::Request& request) const;

  size_t size() const { return files_.size(); }

  // "text/javascript" for "x.js"; application/octet-stream when unknown.
  static const char* ContentType(const std::string& path);

 private:
  struct File {
    std::string content_type;
    std::string bytes;
  };
  std::map<std::string, File, std::less<>> files_;  // by URL path: "/assets/index-x.js"
};

// What "/" serves when the console is not built: how to build it, and that
// the API works without it.
HttpServer::Response ConsoleNotBuilt(const std::string& dir, const std::string& why);

}  // namespace kaizen::http
