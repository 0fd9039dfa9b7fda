#include "server/training/strategy.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kaizen::training {
namespace {

using ::testing::HasSubstr;

TEST(StrategyTest, TheFiveTrainedStrategiesAreAvailable) {
  for (kaizen::v1::Strategy s :
       {kaizen::v1::STRATEGY_FEATURE_EXTRACTION, kaizen::v1::STRATEGY_FINE_TUNE,
        kaizen::v1::STRATEGY_FULL, kaizen::v1::STRATEGY_SCRATCH, kaizen::v1::STRATEGY_DISTILL,
        kaizen::v1::STRATEGY_INCREMENTAL}) {
    EXPECT_TRUE(CheckStrategyAvailable(s).ok()) << kaizen::v1::Strategy_Name(s);
    EXPECT_TRUE(CheckStrategySpecified(s).ok()) << kaizen::v1::Strategy_Name(s);
  }
}

TEST(StrategyTest, UnspecifiedAndUnknownAreInvalidArguments) {
  for (int s : {0, 99}) {
    const auto strategy = static_cast<kaizen::v1::Strategy>(s);
    EXPECT_EQ(CheckStrategySpecified(strategy).code(), absl::StatusCode::kInvalidArgument);
    const absl::Status st = CheckStrategyAvailable(strategy);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(st.message()), HasSubstr("strategy"));
  }
}

}  // namespace
}  // namespace kaizen::training
