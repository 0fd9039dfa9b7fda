#include "client/cli/job_watcher.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace kaizen::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(JobWatcherFormatTest, TrainingProgressShowsWhatIsKnown) {
  kaizen::v1::StepProgress p;
  p.set_epoch(2);
  p.set_step(25);
  p.set_total_steps(100);
  p.set_loss(0.5);
  p.set_learning_rate(1e-3);
  p.set_samples_per_second(320);
  p.set_eta_seconds(65);
  EXPECT_EQ(FormatTrainingProgress(p, 5, 0.849, "val acc"),
            "epoch 2/5 [#####---------------]  25%  step 25/100  loss 0.5000  val acc 84.9%"
            "  lr 1.0e-03  320 img/s  ETA 1:05");
  kaizen::v1::StepProgress bare;
  bare.set_epoch(1);
  EXPECT_EQ(FormatTrainingProgress(bare, 0, std::nullopt, ""),
            "epoch 1 [--------------------]   0%  loss 0.0000");
}

TEST(JobWatcherFormatTest, EpochLinesShowValidationOnlyWhenThereIsSome) {
  kaizen::v1::EpochMetrics m;
  m.set_epoch(3);
  m.set_train_loss(0.41);
  m.set_train_accuracy(0.862);
  m.set_seconds(12.34);
  EXPECT_EQ(FormatEpochLine(m), "epoch 3: train loss 0.4100 acc 86.2% | 12.3s");
  m.set_val_loss(0.45);
  m.set_val_accuracy(0.849);
  EXPECT_EQ(FormatEpochLine(m),
            "epoch 3: train loss 0.4100 acc 86.2% | val loss 0.4500 acc 84.9% | 12.3s");
  m.set_old_class_examples(10);
  m.set_old_class_accuracy(0.9);
  m.set_new_class_examples(5);
  m.set_new_class_accuracy(0.75);
  EXPECT_EQ(FormatEpochLine(m),
            "epoch 3: train loss 0.4100 acc 86.2% | val loss 0.4500 acc 84.9% (old classes 90.0%) "
            "(new classes 75.0%) | 12.3s");
}

TEST(JobWatcherFormatTest, CheckpointLinesNameTheMetricOrTheEpoch) {
  kaizen::v1::CheckpointSaved c;
  c.set_version(3);
  c.set_epoch(3);
  c.set_metric_name("val_accuracy");
  c.set_metric(0.849);
  c.set_is_best(true);
  EXPECT_EQ(FormatCheckpointLine(c), "checkpoint v3 saved (val_accuracy 84.9%, best)");
  c.clear_metric_name();
  c.set_is_best(false);
  EXPECT_EQ(FormatCheckpointLine(c), "checkpoint v3 saved (epoch 3)");
}

TEST(JobWatcherFormatTest, SummaryOfASucceededAndAFailedJob) {
  kaizen::v1::Job job;
  job.set_id("job-1");
  job.set_state(kaizen::v1::JOB_STATE_SUCCEEDED);
  job.set_total_epochs(2);
  job.mutable_request()->set_output_model("shoes");
  job.mutable_start_time()->set_seconds(1000);
  job.mutable_end_time()->set_seconds(1065);
  kaizen::v1::EpochMetrics* e = job.add_history();
  e->set_val_accuracy(0.8);
  job.add_history()->set_val_accuracy(0.9);
  job.set_best_version(2);
  job.set_best_metric(0.9);
  job.set_latest_version(3);
  const std::string summary = FormatJobSummary(job);
  EXPECT_THAT(summary, HasSubstr("job job-1 succeeded: 2/2 epochs in 1:05\n"));
  EXPECT_THAT(summary, HasSubstr("  best:   shoes:2 (val accuracy 90.0%)\n"));
  EXPECT_THAT(summary, HasSubstr("  latest: shoes:3\n"));

  kaizen::v1::Job failed;
  failed.set_id("job-2");
  failed.set_state(kaizen::v1::JOB_STATE_FAILED);
  failed.set_error("loss diverged");
  const std::string text = FormatJobSummary(failed);
  EXPECT_THAT(text, HasSubstr("job job-2 failed\n"));
  EXPECT_THAT(text, HasSubstr("  no model version was written\n"));
  EXPECT_THAT(text, HasSubstr("  error:  loss diverged\n"));
  EXPECT_THAT(text, Not(HasSubstr("best:")));
}

}  // namespace
}  // namespace kaizen::cli
