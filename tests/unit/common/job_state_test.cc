#include "server/common/job_state.h"

#include "gtest/gtest.h"

namespace kaizen::common {
namespace {

TEST(JobStateTest, EndedStatesAreTerminal) {
  EXPECT_TRUE(IsTerminal(kaizen::v1::JOB_STATE_SUCCEEDED));
  EXPECT_TRUE(IsTerminal(kaizen::v1::JOB_STATE_FAILED));
  EXPECT_TRUE(IsTerminal(kaizen::v1::JOB_STATE_CANCELLED));
}

TEST(JobStateTest, StatesThatCanStillChangeAreNot) {
  EXPECT_FALSE(IsTerminal(kaizen::v1::JOB_STATE_UNSPECIFIED));
  EXPECT_FALSE(IsTerminal(kaizen::v1::JOB_STATE_QUEUED));
  EXPECT_FALSE(IsTerminal(kaizen::v1::JOB_STATE_RUNNING));
  EXPECT_FALSE(IsTerminal(kaizen::v1::JOB_STATE_PAUSED));
}

}  // namespace
}  // namespace kaizen::common
