// The JSON API over HTTP on a real server (server/http): every unary v1
// method is routed and answers what gRPC answers, errors keep their gRPC code
// and map to HTTP statuses, tokens and roles apply as on the gRPC port, and
// the request limits (body, headers, connections) hold.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"
#include "server/auth/roles.h"
#include "server/auth/token_file.h"
#include "tests/test_util/http_client.h"
#include "tests/test_util/http_get.h"
#include "tests/test_util/server/loopback_server.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen {
namespace {

using test_util::HttpAnswer;
using test_util::PostJson;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kAdmin[] = "admin-secret-1";
constexpr char kReader[] = "reader-secret-4";

// The unary methods of the v1 services, from the generated descriptors.
std::set<std::string> UnaryV1Methods() {
  std::set<std::string> out;
  for (const char* service : {"kaizen.v1.DatasetService", "kaizen.v1.ModelService",
                              "kaizen.v1.FineTuneService", "kaizen.v1.InferenceService"}) {
    const google::protobuf::ServiceDescriptor* d =
        google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(service);
    EXPECT_NE(d, nullptr) << service;
    if (d == nullptr) continue;
    for (int i = 0; i < d->method_count(); ++i) {
      if (d->method(i)->client_streaming() || d->method(i)->server_streaming()) continue;
      out.insert(absl::StrCat("/", service, "/", d->method(i)->name()));
    }
  }
  return out;
}

std::string Header(const HttpAnswer& a, const std::string& name) {
  auto it = a.headers.find(name);
  return it == a.headers.end() ? "" : it->second;
}

template <typename M>
M FromJson(const std::string& json) {
  M m;
  const auto status = google::protobuf::util::JsonStringToMessage(json, &m);
  EXPECT_TRUE(status.ok()) << status.ToString() << ": " << json;
  return m;
}

class HttpApiE2E : public ::testing::Test {
 protected:
  void Start(bool tokens, size_t max_body_bytes = 16 << 20, int max_connections = 256) {
    api::KaizenServer::Options o = test_util::LoopbackOptions(data_.path());
    o.metrics_port = -1;
    o.http.port = 0;
    o.http.max_body_bytes = max_body_bytes;
    o.http.max_connections = max_connections;
    o.http.request_timeout = absl::Seconds(5);
    if (tokens) {
      o.tokens_file = data_.File("tokens");
      std::ofstream out(o.tokens_file);
      out << auth::TokenFileLine("console-admin", auth::Role::kAdmin, kAdmin) << "\n"
          << auth::TokenFileLine("console-reader", auth::Role::kReader, kReader) << "\n";
    }
    absl::StatusOr<test_util::LoopbackServer> s =
        test_util::StartLoopbackServer(o, /*wait_ready=*/false);
    ASSERT_TRUE(s.ok()) << s.status();
    s_ = *std::move(s);
    port_ = s_.server->http_port();
    ASSERT_GT(port_, 0);
  }

  test_util::TempDir data_;
  test_util::TempDir files_;
  test_util::LoopbackServer s_;
  int port_ = 0;
};

TEST_F(HttpApiE2E, EveryUnaryMethodIsRoutedAndReachesItsService) {
  Start(/*tokens=*/false);
  const std::set<std::string> methods = UnaryV1Methods();
  ASSERT_GE(methods.size(), 14u);
  for (const std::string& method : methods) {
    // An empty request: the service answers (often INVALID_ARGUMENT), but the
    // route exists and the method is implemented.
    const HttpAnswer a = PostJson(port_, absl::StrCat("/api", method), "{}");
    EXPECT_NE(a.status, 0) << method << ": " << a.error;
    EXPECT_THAT(a.body, Not(HasSubstr("no API route"))) << method;
    EXPECT_NE(a.status, 405) << method;
    EXPECT_NE(a.status, 501) << method << ": " << a.body;
    EXPECT_EQ(a.headers.count("content-security-policy"), 1u) << method;
    EXPECT_EQ(Header(a, "x-content-type-options"), "nosniff") << method;
  }
  // The streams are routes too (http_sse_e2e_test.cc, http_upload_e2e_test.cc):
  // an upload takes bytes, not JSON.
  EXPECT_THAT(PostJson(port_, "/api/kaizen.v1.FineTuneService/WatchJob", "{}").body,
              Not(HasSubstr("no API route")));
  const HttpAnswer upload = PostJson(port_, "/api/kaizen.v1.DatasetService/UploadDataset", "{}");
  EXPECT_EQ(upload.status, 415) << upload.body;
  EXPECT_THAT(upload.body, HasSubstr("application/octet-stream"));
}

TEST_F(HttpApiE2E, AnswersAreTheProto3JsonOfTheGrpcAnswers) {
  Start(/*tokens=*/false);
  ASSERT_TRUE(test_util::UploadFashionSubset(*s_.client, files_.path(), "shoes", {5, 7}, 4,
                                             {"sandal", "sneaker"})
                  .ok());
  const HttpAnswer listed = PostJson(port_, "/api/kaizen.v1.DatasetService/ListDatasets", "");
  ASSERT_EQ(listed.status, 200) << listed.body;
  EXPECT_THAT(Header(listed, "content-type"), HasSubstr("application/json"));
  absl::StatusOr<v1::ListDatasetsResponse> grpc_listed = s_.client->ListDatasets();
  ASSERT_TRUE(grpc_listed.ok()) << grpc_listed.status();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(
      FromJson<v1::ListDatasetsResponse>(listed.body), *grpc_listed))
      << listed.body;

  const HttpAnswer got =
      PostJson(port_, "/api/kaizen.v1.DatasetService/GetDataset", R"({"name": "shoes"})");
  ASSERT_EQ(got.status, 200) << got.body;
  const v1::Dataset dataset = FromJson<v1::Dataset>(got.body);
  EXPECT_EQ(dataset.name(), "shoes");
  EXPECT_EQ(dataset.num_examples(), 8);
  // Every field is printed, 64-bit integers as strings (proto3 JSON).
  EXPECT_THAT(got.body, HasSubstr(R"("numExamples":"8")"));
}

TEST_F(HttpApiE2E, ErrorsKeepTheirGrpcCodeAndMapToHttpStatuses) {
  Start(/*tokens=*/false, /*max_body_bytes=*/4096);
  const HttpAnswer missing =
      PostJson(port_, "/api/kaizen.v1.DatasetService/GetDataset", R"({"name": "nope"})");
  EXPECT_EQ(missing.status, 404);
  EXPECT_THAT(missing.body, HasSubstr(R"("status":"NOT_FOUND")"));
  EXPECT_THAT(missing.body, HasSubstr("nope"));

  const HttpAnswer bad_field =
      PostJson(port_, "/api/kaizen.v1.DatasetService/GetDataset", R"({"nmae": "x"})");
  EXPECT_EQ(bad_field.status, 400);
  EXPECT_THAT(bad_field.body, HasSubstr("kaizen.v1.GetDatasetRequest"));
  EXPECT_THAT(bad_field.body, HasSubstr("nmae"));

  EXPECT_EQ(PostJson(port_, "/api/kaizen.v1.DatasetService/GetDataset", "{").status, 400);
  EXPECT_EQ(PostJson(port_, "/api/kaizen.v1.NoService/Get", "{}").status, 404);
  EXPECT_EQ(PostJson(port_, "/metrics", "{}").status, 404);

  const HttpAnswer get =
      test_util::HttpRequest(port_, "GET", "/api/kaizen.v1.DatasetService/ListDatasets");
  EXPECT_EQ(get.status, 405);
  EXPECT_EQ(Header(get, "allow"), "POST");

  // A cross-site "simple" request (no JSON content type) is refused, even
  // without a body; so is a Host that is not loopback, on a server without
  // tokens (DNS rebinding).
  EXPECT_EQ(
      test_util::HttpRequest(port_, "POST", "/api/kaizen.v1.DatasetService/ListDatasets").status,
      415);
  const HttpAnswer rebound =
      test_util::HttpRequest(port_, "POST", "/api/kaizen.v1.DatasetService/ListDatasets", "{}",
                             {{"Content-Type", "application/json"}, {"Host", "evil.example:80"}});
  EXPECT_EQ(rebound.status, 403);
  EXPECT_THAT(rebound.body, HasSubstr("evil.example"));
  EXPECT_EQ(
      test_util::HttpRequest(port_, "POST", "/api/kaizen.v1.DatasetService/ListDatasets", "{}",
                             {{"Content-Type", "application/json"}, {"Host", "localhost:1"}})
          .status,
      200);

  const HttpAnswer form =
      test_util::HttpRequest(port_, "POST", "/api/kaizen.v1.DatasetService/ListDatasets", "a=b",
                             {{"Content-Type", "application/x-www-form-urlencoded"}});
  EXPECT_EQ(form.status, 415);

  const HttpAnswer big = PostJson(port_, "/api/kaizen.v1.DatasetService/GetDataset",
                                  absl::StrCat(R"({"name": ")", std::string(8000, 'x'), R"("})"));
  EXPECT_EQ(big.status, 413) << big.body;

  const HttpAnswer headers = test_util::HttpRequest(
      port_, "POST", "/api/kaizen.v1.DatasetService/ListDatasets", "{}",
      {{"Content-Type", "application/json"}, {"X-Padding", std::string(40000, 'p')}});
  EXPECT_EQ(headers.status, 431);

  // The server is still there.
  EXPECT_EQ(PostJson(port_, "/api/kaizen.v1.DatasetService/ListDatasets", "{}").status, 200);
}

TEST_F(HttpApiE2E, TokensAndRolesApplyAsOnTheGrpcPort) {
  Start(/*tokens=*/true);
  const std::string list = "/api/kaizen.v1.DatasetService/ListDatasets";
  const std::string remove = "/api/kaizen.v1.DatasetService/DeleteDataset";

  const HttpAnswer none = PostJson(port_, list, "{}");
  EXPECT_EQ(none.status, 401);
  EXPECT_EQ(Header(none, "www-authenticate"), "Bearer");
  EXPECT_THAT(none.body, HasSubstr("UNAUTHENTICATED"));
  EXPECT_EQ(PostJson(port_, list, "{}", "forged-token").status, 401);

  EXPECT_EQ(PostJson(port_, list, "{}", kReader).status, 200);
  // With tokens, any Host name (a server behind a DNS name) is answered.
  EXPECT_EQ(test_util::HttpRequest(port_, "POST", list, "{}",
                                   {{"Content-Type", "application/json"},
                                    {"Authorization", absl::StrCat("Bearer ", kReader)},
                                    {"Host", "kaizen.example.com"}})
                .status,
            200);
  const HttpAnswer denied = PostJson(port_, remove, R"({"name": "x"})", kReader);
  EXPECT_EQ(denied.status, 403);
  EXPECT_THAT(denied.body, HasSubstr("PERMISSION_DENIED"));
  EXPECT_THAT(denied.body, HasSubstr("reader"));
  // The admin gets past authorisation: the dataset is simply not there.
  EXPECT_EQ(PostJson(port_, remove, R"({"name": "x"})", kAdmin).status, 404);

  // Each role against each unary route: the same answer as roles.cc.
  for (const std::string& method : UnaryV1Methods()) {
    const HttpAnswer a = PostJson(port_, absl::StrCat("/api", method), "{}", kReader);
    if (auth::RoleAllows(auth::Role::kReader, method)) {
      EXPECT_NE(a.status, 403) << method << ": " << a.body;
    } else {
      EXPECT_EQ(a.status, 403) << method << ": " << a.body;
    }
    EXPECT_NE(a.status, 401) << method;
  }
}

// GET /api/session: who the token names and the routes its role may call.
std::vector<std::string> SessionRoutes(const HttpAnswer& a) {
  google::protobuf::Struct session = FromJson<google::protobuf::Struct>(a.body);
  std::vector<std::string> routes;
  for (const auto& v : session.fields().at("methods").list_value().values()) {
    routes.push_back(v.string_value());
  }
  return routes;
}

TEST_F(HttpApiE2E, TheSessionSaysWhoCallsAndWhichRoutesTheirRoleMayCall) {
  Start(/*tokens=*/true);
  const auto get = [&](const std::string& token) {
    std::vector<std::pair<std::string, std::string>> headers;
    if (!token.empty()) headers.emplace_back("Authorization", absl::StrCat("Bearer ", token));
    return test_util::HttpRequest(port_, "GET", "/api/session", "", headers);
  };
  EXPECT_EQ(get("").status, 401);
  EXPECT_EQ(get("forged-token").status, 401);
  EXPECT_EQ(test_util::HttpRequest(port_, "POST", "/api/session", "{}",
                                   {{"Content-Type", "application/json"}})
                .status,
            405);

  const HttpAnswer reader = get(kReader);
  ASSERT_EQ(reader.status, 200) << reader.body;
  EXPECT_EQ(Header(reader, "cache-control"), "no-store");
  EXPECT_THAT(reader.body, HasSubstr(R"("caller":"console-reader")"));
  EXPECT_THAT(reader.body, HasSubstr(R"("role":"reader")"));
  EXPECT_THAT(reader.body, HasSubstr(R"("tokensRequired":true)"));
  const std::vector<std::string> readable = SessionRoutes(reader);
  EXPECT_THAT(readable, ::testing::Contains("/api/kaizen.v1.FineTuneService/WatchJob"));
  // Exactly the routes roles.cc lets a reader call, and each one answers.
  for (const std::string& method : UnaryV1Methods()) {
    const bool listed = std::count(readable.begin(), readable.end(), "/api" + method) > 0;
    EXPECT_EQ(listed, auth::RoleAllows(auth::Role::kReader, method)) << method;
    if (!listed) {
      EXPECT_EQ(PostJson(port_, "/api" + method, "{}", kReader).status, 403) << method;
    }
  }
  EXPECT_THAT(readable, Not(::testing::Contains("/api/kaizen.v1.FineTuneService/StartFineTune")));

  const HttpAnswer admin = get(kAdmin);
  ASSERT_EQ(admin.status, 200) << admin.body;
  EXPECT_THAT(admin.body, HasSubstr(R"("role":"admin")"));
  // And the four streams: WatchJob, DownloadModel and the two uploads.
  EXPECT_EQ(SessionRoutes(admin).size(), UnaryV1Methods().size() + 4);
}

TEST_F(HttpApiE2E, WithoutTokensTheSessionIsAnAdminWithEveryRoute) {
  Start(/*tokens=*/false);
  const HttpAnswer a = test_util::HttpRequest(port_, "GET", "/api/session");
  ASSERT_EQ(a.status, 200) << a.body;
  EXPECT_THAT(a.body, HasSubstr(R"("tokensRequired":false)"));
  EXPECT_THAT(a.body, HasSubstr(R"("role":"admin")"));
  EXPECT_THAT(SessionRoutes(a), ::testing::Contains("/api/kaizen.v1.DatasetService/DeleteDataset"));
}

TEST_F(HttpApiE2E, ConnectionsBeyondTheLimitGet503) {
  Start(/*tokens=*/false, 16 << 20, /*max_connections=*/2);
  // Two idle connections hold both places.
  const int a = test_util::ConnectLoopback(port_);
  const int b = test_util::ConnectLoopback(port_);
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_EQ(PostJson(port_, "/api/kaizen.v1.DatasetService/ListDatasets", "{}").status, 503);
  close(a);
  close(b);
  // Their places free up once the server sees them close.
  int status = 0;
  for (int i = 0; i < 50 && status != 200; ++i) {
    absl::SleepFor(absl::Milliseconds(100));
    status = PostJson(port_, "/api/kaizen.v1.DatasetService/ListDatasets", "{}").status;
  }
  EXPECT_EQ(status, 200);
}

TEST_F(HttpApiE2E, ARequestThatDoesNotArriveInTimeIsClosed) {
  Start(/*tokens=*/false);
  const int fd = test_util::ConnectLoopback(port_);
  ASSERT_GE(fd, 0);
  const std::string partial =
      "POST /api/kaizen.v1.DatasetService/ListDatasets HTTP/1.1\r\nHost: x\r\n";
  ASSERT_EQ(write(fd, partial.data(), partial.size()), static_cast<ssize_t>(partial.size()));
  // The request never completes; after 5 s the server closes the connection.
  const absl::Time start = absl::Now();
  std::string got;
  char buf[4096];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  EXPECT_EQ(got, "");
  EXPECT_GE(absl::Now() - start, absl::Seconds(4));
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
  // Others are served meanwhile and after.
  EXPECT_EQ(PostJson(port_, "/api/kaizen.v1.DatasetService/ListDatasets", "{}").status, 200);
}

}  // namespace
}  // namespace kaizen
