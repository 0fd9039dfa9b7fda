#include "server/api/request_scope.h"

#include <gmock/gmock.h>
#include <grpcpp/server_context.h>
#include <grpcpp/test/server_context_test_spouse.h>
#include <gtest/gtest.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "prometheus/text_serializer.h"
#include "server/auth/token_file.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::api {
namespace {

using ::testing::HasSubstr;

constexpr char kService[] = "kaizen.v1.InferenceService";
constexpr char kMethod[] = "Predict";

std::unique_ptr<metrics::Metrics> NewMetrics() {
  absl::StatusOr<std::unique_ptr<metrics::Metrics>> m = metrics::Metrics::Create("127.0.0.1", -1);
  EXPECT_TRUE(m.ok()) << m.status();
  return *std::move(m);
}

std::string Scrape(metrics::Metrics& m) {
  return prometheus::TextSerializer().Serialize(m.Collect());
}

TEST(ToGrpcStatusTest, SameCodeAndMessageButNeverUnknown) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  grpc::Status s = ToGrpcStatus(absl::NotFoundError("no model \"m\""));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(s.error_message(), "no model \"m\"");
  EXPECT_EQ(ToGrpcStatus(absl::UnknownError("?")).error_code(), grpc::StatusCode::INTERNAL);
}

TEST(RequestScopeTest, CountsTheStartAndTheOutcomeAndLogsOneLine) {
  std::unique_ptr<metrics::Metrics> m = NewMetrics();
  ::testing::internal::CaptureStderr();
  {
    RequestScope scope(m.get(), kService, kMethod, nullptr);
    scope.set_resource("shoes");
    grpc::Status out = scope.Finish(absl::InvalidArgumentError("bad shape"));
    EXPECT_EQ(out.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(log, HasSubstr(R"("level":"warning","msg":"request","method":"Predict")"));
  EXPECT_THAT(log, HasSubstr(R"("code":"INVALID_ARGUMENT")"));
  EXPECT_THAT(log, HasSubstr(R"("resource":"shoes")"));
  EXPECT_THAT(log, HasSubstr(R"("error":"bad shape")"));
  const std::string text = Scrape(*m);
  EXPECT_THAT(text, HasSubstr(absl::StrCat("grpc_server_started_total{grpc_method=\"Predict\",",
                                           "grpc_service=\"kaizen.v1.InferenceService\",",
                                           "grpc_type=\"unary\"} 1")));
  EXPECT_THAT(text, HasSubstr(absl::StrCat(
                        "grpc_server_handled_total{grpc_code=\"InvalidArgument\",",
                        "grpc_method=\"Predict\",", "grpc_service=\"kaizen.v1.InferenceService\",",
                        "grpc_type=\"unary\"} 1")));
}

class RequestScopeAuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::ofstream(dir_.File("tokens"))
        << auth::TokenFileLine("app", auth::Role::kPredictor, "app-secret") << "\n"
        << auth::TokenFileLine("viewer", auth::Role::kReader, "viewer-secret") << "\n";
    auth::Authenticator::Options o;
    o.tokens_file = dir_.File("tokens");
    absl::StatusOr<std::unique_ptr<auth::Authenticator>> a = auth::Authenticator::Create(o);
    ASSERT_TRUE(a.ok()) << a.status();
    auth_ = *std::move(a);
  }
  absl::Status Call(const std::string& authorization) {
    grpc::ServerContext context;
    grpc::testing::ServerContextTestSpouse spouse(&context);
    if (!authorization.empty()) spouse.AddClientMetadata("authorization", authorization);
    RequestScope scope(nullptr, kService, kMethod, &context);
    return scope.Authorize(auth_.get());
  }
  test_util::TempDir dir_;
  std::unique_ptr<auth::Authenticator> auth_;
};

TEST_F(RequestScopeAuthTest, TheBearerTokenDecides) {
  EXPECT_TRUE(Call("Bearer app-secret").ok());
  EXPECT_EQ(Call("").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(Call("Bearer wrong").code(), absl::StatusCode::kUnauthenticated);
  absl::Status viewer = Call("Bearer viewer-secret");
  EXPECT_EQ(viewer.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(viewer.message(), HasSubstr("/kaizen.v1.InferenceService/Predict"));
}

TEST(RequestScopeNoAuthTest, WithoutTokensEverythingIsAllowed) {
  RequestScope scope(nullptr, kService, kMethod, nullptr);
  EXPECT_TRUE(scope.Authorize(nullptr).ok());
}

}  // namespace
}  // namespace kaizen::api
