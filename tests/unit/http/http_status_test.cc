#include "server/http/http_status.h"

#include <gtest/gtest.h>

#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace kaizen::http {
namespace {

TEST(HttpStatusTest, EveryGrpcCodeHasItsHttpStatus) {
  using grpc::StatusCode;
  const std::pair<StatusCode, int> expected[] = {
      {StatusCode::OK, 200},
      {StatusCode::CANCELLED, 499},
      {StatusCode::UNKNOWN, 500},
      {StatusCode::INVALID_ARGUMENT, 400},
      {StatusCode::DEADLINE_EXCEEDED, 504},
      {StatusCode::NOT_FOUND, 404},
      {StatusCode::ALREADY_EXISTS, 409},
      {StatusCode::PERMISSION_DENIED, 403},
      {StatusCode::RESOURCE_EXHAUSTED, 429},
      {StatusCode::FAILED_PRECONDITION, 400},
      {StatusCode::ABORTED, 409},
      {StatusCode::OUT_OF_RANGE, 400},
      {StatusCode::UNIMPLEMENTED, 501},
      {StatusCode::INTERNAL, 500},
      {StatusCode::UNAVAILABLE, 503},
      {StatusCode::DATA_LOSS, 500},
      {StatusCode::UNAUTHENTICATED, 401},
  };
  for (const auto& [code, http] : expected) {
    EXPECT_EQ(HttpStatusFor(code), http) << StatusCodeName(code);
  }
  EXPECT_EQ(StatusCodeName(grpc::StatusCode::NOT_FOUND), "NOT_FOUND");
  EXPECT_EQ(StatusCodeName(static_cast<grpc::StatusCode>(99)), "UNKNOWN_CODE");
}

TEST(HttpStatusTest, TheErrorBodyIsJsonWithTheCodeAndTheMessageEscaped) {
  const std::string message = "dataset \"a\\b\"\nnot found \x01 <script>";
  const std::string json = ErrorJson(grpc::StatusCode::NOT_FOUND, message);
  google::protobuf::Struct parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json, &parsed).ok()) << json;
  EXPECT_EQ(parsed.fields().at("code").number_value(), 5);
  EXPECT_EQ(parsed.fields().at("status").string_value(), "NOT_FOUND");
  EXPECT_EQ(parsed.fields().at("message").string_value(), message);
}

}  // namespace
}  // namespace kaizen::http
