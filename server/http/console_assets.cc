#include "server/http/console_assets.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace kaizen::http {

namespace fs = std::filesystem;

const char* ConsoleAssets::ContentType(const std::string& path) {
  static constexpr std::pair<const char*, const char*> kTypes[] = {
      {".html", "text/html; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".json", "application/json"},
      {".svg", "image/svg+xml"},
      {".png", "image/png"},
      {".ico", "image/x-icon"},
      {".woff2", "font/woff2"},
      {".txt", "text/plain; charset=utf-8"},
  };
  for (const auto& [extension, type] : kTypes) {
    if (absl::EndsWith(path, extension)) return type;
  }
  return "application/octet-stream";
}

absl::StatusOr<ConsoleAssets> ConsoleAssets::Load(const std::string& dir, Limits limits) {
  std::error_code ec;
  if (!fs::is_regular_file(fs::path(dir) / "index.html", ec)) {
    return absl::NotFoundError(absl::StrCat("no index.html in ", dir));
  }
  ConsoleAssets assets;
  size_t total = 0;
  fs::recursive_directory_iterator it(dir, fs::directory_options::none, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    if (!it->is_regular_file(ec) || it->is_symlink(ec)) continue;
    if (assets.files_.size() >= limits.max_files) {
      return absl::ResourceExhaustedError(
          absl::StrCat(dir, " holds more than ", limits.max_files, " files"));
    }
    const uintmax_t size = it->file_size(ec);
    if (ec || size > limits.max_total_bytes - total) {
      return absl::ResourceExhaustedError(
          absl::StrCat(dir, " holds more than ", limits.max_total_bytes, " bytes"));
    }
    std::ifstream in(it->path(), std::ios::binary);
    std::ostringstream bytes;
    bytes << in.rdbuf();
    if (!in.good() && !in.eof()) {
      return absl::DataLossError(absl::StrCat("cannot read ", it->path().string()));
    }
    total += size;
    const std::string url = "/" + fs::relative(it->path(), dir, ec).generic_string();
    assets.files_[url] = File{ContentType(url), bytes.str()};
  }
  if (ec) return absl::UnavailableError(absl::StrCat("cannot list ", dir, ": ", ec.message()));
  return assets;
}

HttpServer::Response ConsoleAssets::Serve(const HttpServer::Request& request) const {
  HttpServer::Response r;
  r.content_type = "text/plain; charset=utf-8";
  if (request.method != "GET") {
    r.status = 405;
    r.headers.emplace_back("Allow", "GET");
    r.body = "the console's files take GET\n";
    return r;
  }
  std::string path = request.target.substr(0, request.target.find('?'));
  if (path == "/") path = "/index.html";
  auto it = files_.find(path);
  if (it == files_.end()) {
    r.status = 404;
    r.body = "no such file\n";
    return r;
  }
  r.content_type = it->second.content_type;
  r.body = it->second.bytes;
  // Vite names what it builds under assets/ by content hash.
  if (absl::StartsWith(path, "/assets/")) {
    r.headers.emplace_back("Cache-Control", "public, max-age=31536000, immutable");
  }
  return r;
}

HttpServer::Response ConsoleNotBuilt(const std::string& dir, const std::string& why) {
  HttpServer::Response r;
  r.status = 404;
  r.content_type = "text/plain; charset=utf-8";
  r.body = absl::StrCat(
      "Kaizen's web console is not here (", why, ").\n",
      "Build it with scripts/setup.sh (npm ci and vite build in console/, into console/dist),\n",
      "or point --console_dir at a built copy",
      dir.empty() ? "" : absl::StrCat(" (now: ", dir, ")"),
      ". The JSON API under /api/ works without it.\n");
  return r;
}

}  // namespace kaizen::http
