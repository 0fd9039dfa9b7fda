#include "server/jobs/job_history.h"

#include <gtest/gtest.h>

#include <string>

#include "server/common/text_limits.h"

namespace kaizen::jobs {
namespace {

kaizen::v1::EpochMetrics Epoch(int epoch, int classes) {
  kaizen::v1::EpochMetrics m;
  m.set_epoch(epoch);
  m.set_val_accuracy(0.5);
  for (int c = 0; c < classes; ++c) {
    std::string name = std::to_string(c);
    name.resize(common::kMaxClassNameBytes, 'x');
    (*m.mutable_per_class_accuracy())[name] = 0.5;
  }
  return m;
}

TEST(JobHistory, KeepsPerClassAccuracyOnTheNewestEpochOnly) {
  kaizen::v1::Job job;
  AppendEpochToHistory(Epoch(1, 3), &job);
  AppendEpochToHistory(Epoch(2, 3), &job);
  ASSERT_EQ(job.history_size(), 2);
  EXPECT_EQ(job.history(0).epoch(), 1);
  EXPECT_TRUE(job.history(0).per_class_accuracy().empty());
  EXPECT_EQ(job.history(0).val_accuracy(), 0.5);
  EXPECT_EQ(job.history(1).per_class_accuracy_size(), 3);
}

TEST(JobHistory, ALongJobWithTheMostClassesStaysAStorableRecord) {
  // 200 epochs of 5,000 classes: with every epoch's per-class map the record
  // would be ~140 MB, past gRPC's message limit for GetJob and ListJobs.
  kaizen::v1::Job job;
  for (int e = 1; e <= 200; ++e) AppendEpochToHistory(Epoch(e, common::kMaxClasses), &job);
  EXPECT_EQ(job.history_size(), 200);
  EXPECT_LE(job.ByteSizeLong(), common::kMaxRecordBytes);
}

}  // namespace
}  // namespace kaizen::jobs
