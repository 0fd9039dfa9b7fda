#include "server/training/early_stopping.h"

#include "gtest/gtest.h"

namespace kaizen::training {
namespace {

TEST(EarlyStoppingTest, FirstEpochIsTheBest) {
  ResumeState state;
  EXPECT_TRUE(RecordCheckpointMetric(0.5, /*maximise=*/true, 0.0, 1, &state));
  EXPECT_TRUE(state.has_best);
  EXPECT_EQ(state.best_metric, 0.5);
  EXPECT_EQ(state.best_epoch, 1);
  EXPECT_EQ(state.epochs_without_improvement, 0);
}

TEST(EarlyStoppingTest, AccuracyIsMaximisedAndTiesAreNotBest) {
  ResumeState state;
  RecordCheckpointMetric(0.5, true, 0.0, 1, &state);
  EXPECT_TRUE(RecordCheckpointMetric(0.6, true, 0.0, 2, &state));
  EXPECT_FALSE(RecordCheckpointMetric(0.6, true, 0.0, 3, &state));
  EXPECT_FALSE(RecordCheckpointMetric(0.4, true, 0.0, 4, &state));
  EXPECT_EQ(state.best_epoch, 2);
  EXPECT_EQ(state.best_metric, 0.6);
  EXPECT_EQ(state.epochs_without_improvement, 2);
}

TEST(EarlyStoppingTest, LossIsMinimised) {
  ResumeState state;
  RecordCheckpointMetric(1.0, /*maximise=*/false, 0.0, 1, &state);
  EXPECT_TRUE(RecordCheckpointMetric(0.8, false, 0.0, 2, &state));
  EXPECT_FALSE(RecordCheckpointMetric(0.9, false, 0.0, 3, &state));
  EXPECT_EQ(state.best_epoch, 2);
  EXPECT_EQ(state.epochs_without_improvement, 1);
}

TEST(EarlyStoppingTest, GainsBelowMinDeltaAreBestButDoNotResetPatience) {
  ResumeState state;
  RecordCheckpointMetric(0.50, true, 0.05, 1, &state);
  EXPECT_TRUE(RecordCheckpointMetric(0.52, true, 0.05, 2, &state));
  EXPECT_EQ(state.epochs_without_improvement, 1);
  EXPECT_TRUE(RecordCheckpointMetric(0.54, true, 0.05, 3, &state));
  EXPECT_EQ(state.epochs_without_improvement, 2);
  // Measured against 0.50, the last value that improved by min_delta.
  EXPECT_TRUE(RecordCheckpointMetric(0.56, true, 0.05, 4, &state));
  EXPECT_EQ(state.epochs_without_improvement, 0);
  EXPECT_EQ(state.patience_reference, 0.56);
}

TEST(EarlyStoppingTest, PatienceExhaustedOnlyWhenEnabled) {
  ResumeState state;
  state.epochs_without_improvement = 2;
  kaizen::v1::EarlyStopping options;
  options.set_patience(2);
  EXPECT_FALSE(PatienceExhausted(options, state));
  options.set_enabled(true);
  EXPECT_TRUE(PatienceExhausted(options, state));
  options.set_patience(3);
  EXPECT_FALSE(PatienceExhausted(options, state));
}

TEST(EarlyStoppingTest, PatienceOfZeroMeansOne) {
  ResumeState state;
  kaizen::v1::EarlyStopping options;
  options.set_enabled(true);
  EXPECT_FALSE(PatienceExhausted(options, state));
  state.epochs_without_improvement = 1;
  EXPECT_TRUE(PatienceExhausted(options, state));
}

}  // namespace
}  // namespace kaizen::training
