#include "server/http/console_assets.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/test_util/temp_dir.h"

namespace kaizen::http {
namespace {

using ::testing::HasSubstr;

void Write(const std::string& path, const std::string& bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

HttpServer::Request Get(const std::string& target, const std::string& method = "GET") {
  HttpServer::Request r;
  r.method = method;
  r.target = target;
  return r;
}

std::string Header(const HttpServer::Response& r, const std::string& name) {
  for (const auto& [n, v] : r.headers) {
    if (n == name) return v;
  }
  return "";
}

TEST(ConsoleAssetsTest, ServesTheBuiltFilesByPathAndNothingElse) {
  test_util::TempDir dir;
  Write(dir.File("index.html"), "<!doctype html><title>Kaizen</title>");
  Write(dir.File("assets/index-abc.js"), "console.log(1)");
  Write(dir.File("assets/index-abc.css"), "body{}");
  // A link out of the folder is not followed, nor served.
  test_util::TempDir elsewhere;
  Write(elsewhere.File("secret.txt"), "secret");
  ASSERT_EQ(symlink(elsewhere.File("secret.txt").c_str(), dir.File("assets/leak.txt").c_str()), 0);

  absl::StatusOr<ConsoleAssets> assets = ConsoleAssets::Load(dir.path());
  ASSERT_TRUE(assets.ok()) << assets.status();
  EXPECT_EQ(assets->size(), 3u);

  HttpServer::Response index = assets->Serve(Get("/"));
  EXPECT_EQ(index.status, 200);
  EXPECT_EQ(index.content_type, "text/html; charset=utf-8");
  EXPECT_THAT(index.body, HasSubstr("<title>Kaizen</title>"));
  EXPECT_EQ(Header(index, "Cache-Control"), "");  // the server's no-store stands

  HttpServer::Response js = assets->Serve(Get("/assets/index-abc.js?v=1"));
  EXPECT_EQ(js.status, 200);
  EXPECT_EQ(js.content_type, "text/javascript; charset=utf-8");
  EXPECT_EQ(js.body, "console.log(1)");
  EXPECT_THAT(Header(js, "Cache-Control"), HasSubstr("immutable"));
  EXPECT_EQ(assets->Serve(Get("/assets/index-abc.css")).content_type, "text/css; charset=utf-8");

  for (const char* bad : {"/assets/leak.txt", "/../secret.txt", "/assets/../index.html",
                          "/index.html/", "//index.html", "/nope.js", "/%2e%2e/secret.txt"}) {
    EXPECT_EQ(assets->Serve(Get(bad)).status, 404) << bad;
  }
  HttpServer::Response post = assets->Serve(Get("/", "POST"));
  EXPECT_EQ(post.status, 405);
  EXPECT_EQ(Header(post, "Allow"), "GET");
}

TEST(ConsoleAssetsTest, AFolderWithoutIndexOrOverTheLimitsIsRefused) {
  test_util::TempDir dir;
  EXPECT_EQ(ConsoleAssets::Load(dir.path()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ConsoleAssets::Load(dir.File("missing")).status().code(), absl::StatusCode::kNotFound);
  Write(dir.File("index.html"), std::string(100, 'x'));
  Write(dir.File("a.js"), std::string(100, 'y'));
  ConsoleAssets::Limits few;
  few.max_files = 1;
  EXPECT_EQ(ConsoleAssets::Load(dir.path(), few).status().code(),
            absl::StatusCode::kResourceExhausted);
  ConsoleAssets::Limits small;
  small.max_total_bytes = 150;
  EXPECT_EQ(ConsoleAssets::Load(dir.path(), small).status().code(),
            absl::StatusCode::kResourceExhausted);

  HttpServer::Response missing = ConsoleNotBuilt("/x/dist", "no index.html in /x/dist");
  EXPECT_EQ(missing.status, 404);
  EXPECT_THAT(missing.body, HasSubstr("scripts/setup.sh"));
  EXPECT_THAT(missing.body, HasSubstr("/api/"));
}

}  // namespace
}  // namespace kaizen::http
