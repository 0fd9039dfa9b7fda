#include "server/training/lr_schedule.h"

#include <cmath>

#include "gtest/gtest.h"

namespace kaizen::training {
namespace {

TEST(LrScheduleTest, ScheduleWarmupThenCosine) {
  kaizen::v1::ScheduleOptions o;
  o.set_kind(kaizen::v1::SCHEDULE_COSINE);
  o.set_warmup_epochs(1);
  o.set_min_lr_ratio(0.1);
  LrSchedule s(o, /*steps_per_epoch=*/10, /*epochs=*/5);  // 50 steps, 10 warm-up
  EXPECT_EQ(s.total_steps(), 50);
  EXPECT_EQ(s.warmup_steps(), 10);
  EXPECT_DOUBLE_EQ(s.Factor(0), 0.1);
  EXPECT_DOUBLE_EQ(s.Factor(4), 0.5);
  EXPECT_DOUBLE_EQ(s.Factor(9), 1.0);
  EXPECT_DOUBLE_EQ(s.Factor(10), 1.0);                // cosine starts at the top
  EXPECT_NEAR(s.Factor(30), 0.1 + 0.9 * 0.5, 1e-12);  // halfway through the decay
  EXPECT_NEAR(s.Factor(50), 0.1, 1e-12);
  for (int64_t step = 11; step < 50; ++step) EXPECT_LT(s.Factor(step), s.Factor(step - 1));
}

TEST(LrScheduleTest, StepSchedule) {
  kaizen::v1::ScheduleOptions o;
  o.set_kind(kaizen::v1::SCHEDULE_STEP);
  o.set_step_epochs(2);
  o.set_step_gamma(0.5);
  LrSchedule s(o, /*steps_per_epoch=*/4, /*epochs=*/6);
  EXPECT_DOUBLE_EQ(s.Factor(0), 1.0);
  EXPECT_DOUBLE_EQ(s.Factor(7), 1.0);    // epoch 1
  EXPECT_DOUBLE_EQ(s.Factor(8), 0.5);    // epoch 2
  EXPECT_DOUBLE_EQ(s.Factor(16), 0.25);  // epoch 4
  o.set_kind(kaizen::v1::SCHEDULE_CONSTANT);
  EXPECT_DOUBLE_EQ(LrSchedule(o, 4, 6).Factor(20), 1.0);
}

}  // namespace
}  // namespace kaizen::training
