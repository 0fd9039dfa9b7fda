#include "client/cli/predict_bench.h"

#include <gmock/gmock.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include <limits>

namespace kaizen::cli {
namespace {

using ::testing::HasSubstr;

PredictBench::Result SomeResult() {
  PredictBench::Result r;
  r.concurrency = 4;
  r.requests_per_second = 120.5;
  r.p50_ms = 3.25;
  r.errors["UNAVAILABLE"] = 2;
  r.first_error = "no \"model\"\n";
  r.versions[3] = 10;
  return r;
}

// The document parsed by protobuf's JSON parser (a strict one).
google::protobuf::Struct Parse(const std::string& json) {
  google::protobuf::Struct doc;
  const auto status = google::protobuf::util::JsonStringToMessage(json, &doc);
  EXPECT_TRUE(status.ok()) << status.ToString() << "\n" << json;
  return doc;
}

TEST(PredictBenchJsonTest, IsValidJsonWithTheFigures) {
  const google::protobuf::Struct doc =
      Parse(PredictBenchJson(SomeResult(), "shoes", /*batching=*/true, "tensor"));
  const auto& f = doc.fields();
  EXPECT_EQ(f.at("model").string_value(), "shoes");
  EXPECT_TRUE(f.at("batching").bool_value());
  EXPECT_EQ(f.at("concurrency").number_value(), 4);
  EXPECT_DOUBLE_EQ(f.at("requests_per_second").number_value(), 120.5);
  EXPECT_DOUBLE_EQ(f.at("latency_ms").struct_value().fields().at("p50").number_value(), 3.25);
  EXPECT_EQ(f.at("first_error").string_value(), "no \"model\"\n");
}

TEST(PredictBenchJsonTest, NonFiniteFiguresAndBadBytesStayValidJson) {
  PredictBench::Result r = SomeResult();
  r.p99_ms = std::numeric_limits<double>::quiet_NaN();
  r.mean_ms = std::numeric_limits<double>::infinity();
  r.first_error = "bad byte \xff";
  const std::string json = PredictBenchJson(r, "caf\xc3\xa9", false, "image");
  EXPECT_THAT(json, HasSubstr("\"p99\": null"));
  const google::protobuf::Struct doc = Parse(json);
  const auto& latency = doc.fields().at("latency_ms").struct_value().fields();
  EXPECT_EQ(latency.at("p99").kind_case(), google::protobuf::Value::kNullValue);
  EXPECT_EQ(latency.at("mean").kind_case(), google::protobuf::Value::kNullValue);
  EXPECT_EQ(doc.fields().at("model").string_value(), "caf\xc3\xa9");
  EXPECT_EQ(doc.fields().at("first_error").string_value(), "bad byte \xef\xbf\xbd");
}

TEST(PredictBenchTextTest, NamesTheRunAndItsErrors) {
  const std::string text = PredictBenchText(SomeResult(), "shoes", true, "tensor");
  EXPECT_THAT(text, HasSubstr("predict shoes"));
  EXPECT_THAT(text, HasSubstr("concurrency 4"));
  EXPECT_THAT(text, HasSubstr("UNAVAILABLE"));
}

}  // namespace
}  // namespace kaizen::cli
