#include "server/training/forward_latency.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/training/training_test_util.h"

namespace kaizen::training {
namespace {

using ::testing::HasSubstr;

TEST(ForwardLatencyTest, MeasuresBothModelsSideBySide) {
  const fixtures::BaseModel small = fixtures::Builtin("cnn-small", 10);
  const fixtures::BaseModel large = fixtures::Builtin("resnet-small", 10, 32, 3);
  auto c = CompareForwardLatency(large.module, {3, 32, 32}, small.module, {1, 28, 28}, torch::kCPU,
                                 /*rounds=*/5, /*warmup=*/1);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rounds, 5);
  EXPECT_GT(c->first_ms, 0);
  EXPECT_GT(c->second_ms, 0);
}

TEST(ForwardLatencyTest, RefusesBadShapesAndRoundsAndNamesTheFailingModel) {
  const fixtures::BaseModel m = fixtures::Builtin("cnn-small", 10);
  EXPECT_EQ(
      CompareForwardLatency(m.module, {28, 28}, m.module, {1, 28, 28}, torch::kCPU).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CompareForwardLatency(m.module, {1, 28, 28}, m.module, {1, 28, 28}, torch::kCPU, 0)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  // Three channels into a one-channel model.
  auto bad = CompareForwardLatency(m.module, {1, 28, 28}, m.module, {3, 28, 28}, torch::kCPU);
  ASSERT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("the second model failed"));
}

// Each model's own inputs (a text model's ids and mask, say); the wrong
// ones name the model.
TEST(ForwardLatencyTest, TakesEachModelsOwnInputs) {
  const fixtures::BaseModel m = fixtures::Builtin("cnn-small", 10);
  auto c = CompareForwardLatencyOnInputs(m.module, {torch::zeros({1, 1, 28, 28})}, m.module.clone(),
                                         {torch::ones({1, 1, 28, 28})}, torch::kCPU, 3, 1);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rounds, 3);
  EXPECT_GT(c->first_ms, 0);
  EXPECT_GT(c->second_ms, 0);
  auto bad = CompareForwardLatencyOnInputs(m.module, {torch::zeros({1, 2, 28, 28})}, m.module,
                                           {torch::zeros({1, 1, 28, 28})}, torch::kCPU, 3, 1);
  ASSERT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("the first model failed"));
}

}  // namespace
}  // namespace kaizen::training
