#include "server/jobs/checkpoint_policy.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kaizen::jobs {
namespace {

using ::testing::ElementsAre;

TEST(CheckpointPolicyTest, ZeroOrNegativeKeepMeansTheDefault) {
  EXPECT_EQ(RetentionFor(0, 0).keep_newest, kDefaultKeepCheckpoints);
  EXPECT_EQ(RetentionFor(-2, 0).keep_newest, kDefaultKeepCheckpoints);
  EXPECT_EQ(RetentionFor(5, 7).keep_newest, 5);
  EXPECT_EQ(RetentionFor(5, 7).best_version, 7);
}

TEST(CheckpointPolicyTest, KeepsTheNewestVersions) {
  EXPECT_THAT(VersionsToKeep({1, 2, 3, 4, 5}, RetentionFor(3, 0)), ElementsAre(3, 4, 5));
}

TEST(CheckpointPolicyTest, KeepsEverythingWhileFewerThanKeep) {
  EXPECT_THAT(VersionsToKeep({1, 2}, RetentionFor(3, 2)), ElementsAre(1, 2));
}

TEST(CheckpointPolicyTest, TheBestVersionSurvivesItsAge) {
  EXPECT_THAT(VersionsToKeep({1, 2, 3, 4, 5, 6}, RetentionFor(2, 2)), ElementsAre(2, 5, 6));
}

TEST(CheckpointPolicyTest, TheBestAmongTheNewestIsNotDuplicated) {
  EXPECT_THAT(VersionsToKeep({1, 2, 3, 4}, RetentionFor(2, 4)), ElementsAre(3, 4));
}

TEST(CheckpointPolicyTest, InputOrderDoesNotMatter) {
  EXPECT_THAT(VersionsToKeep({5, 1, 4, 2, 3, 3}, RetentionFor(2, 1)), ElementsAre(1, 4, 5));
}

TEST(CheckpointPolicyTest, KeepOneLeavesTheLatestAndTheBest) {
  EXPECT_THAT(VersionsToKeep({7, 8, 9}, RetentionFor(1, 7)), ElementsAre(7, 9));
}

TEST(CheckpointPolicyTest, ValidationAccuracyJudgesWhenPresent) {
  google::protobuf::Map<std::string, double> metrics;
  metrics["train_loss"] = 0.7;
  metrics["val_accuracy"] = 0.9;
  const CheckpointMetric m = CheckpointMetricOf(metrics);
  EXPECT_EQ(m.name, "val_accuracy");
  EXPECT_EQ(m.value, 0.9);
}

TEST(CheckpointPolicyTest, TrainingLossJudgesWithoutValidation) {
  google::protobuf::Map<std::string, double> metrics;
  metrics["train_loss"] = 0.7;
  metrics["train_accuracy"] = 0.8;
  const CheckpointMetric m = CheckpointMetricOf(metrics);
  EXPECT_EQ(m.name, "train_loss");
  EXPECT_EQ(m.value, 0.7);
  EXPECT_EQ(CheckpointMetricOf({}).value, 0.0);
}

TEST(CheckpointPolicyTest, HeldOutLossJudgesMaskedLanguageModelling) {
  google::protobuf::Map<std::string, double> metrics;
  metrics["train_loss"] = 5.5;
  metrics["masked_lm_loss"] = 5.5;
  metrics["val_masked_lm_loss"] = 6.25;
  const CheckpointMetric m = CheckpointMetricOf(metrics);
  EXPECT_EQ(m.name, "val_masked_lm_loss");
  EXPECT_EQ(m.value, 6.25);
}

TEST(CheckpointPolicyTest, FirstCheckpointIsAlwaysTheBestVersion) {
  EXPECT_TRUE(BecomesBestVersion(false, 0));
  EXPECT_TRUE(BecomesBestVersion(true, 3));
  EXPECT_FALSE(BecomesBestVersion(false, 3));
}

}  // namespace
}  // namespace kaizen::jobs
