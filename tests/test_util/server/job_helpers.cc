#include "tests/test_util/server/job_helpers.h"

#include <gtest/gtest.h>

#include <chrono>

namespace kaizen::test_util {

v1::StartFineTuneRequest FineTuneRequest(const std::string& base, const std::string& dataset,
                                         const std::string& output, v1::Strategy strategy,
                                         int epochs) {
  v1::StartFineTuneRequest r;
  r.set_base_model(base);
  r.set_dataset(dataset);
  r.set_output_model(output);
  r.set_strategy(strategy);
  r.mutable_hyperparameters()->set_epochs(epochs);
  r.mutable_hyperparameters()->set_seed(7);
  r.mutable_hyperparameters()->mutable_validation()->set_split(0.2);
  return r;
}

std::vector<v1::JobEvent> WatchAll(v1::FineTuneService::Stub& stub, const std::string& id,
                                   int64_t after, grpc::Status* status) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(5));
  v1::WatchJobRequest r;
  r.set_id(id);
  r.set_after_sequence(after);
  auto reader = stub.WatchJob(&ctx, r);
  std::vector<v1::JobEvent> out;
  v1::JobEvent e;
  while (reader->Read(&e)) out.push_back(e);
  grpc::Status st = reader->Finish();
  if (status) *status = st;
  return out;
}

std::vector<v1::JobState> StatesOf(const std::vector<v1::JobEvent>& events) {
  std::vector<v1::JobState> out;
  for (const v1::JobEvent& e : events) {
    if (e.event_case() == v1::JobEvent::kState) out.push_back(e.state());
  }
  return out;
}

void ExpectSameHistory(const v1::Job& uninterrupted, const v1::Job& resumed) {
  ASSERT_EQ(resumed.history_size(), uninterrupted.history_size());
  for (int i = 0; i < resumed.history_size(); ++i) {
    const v1::EpochMetrics& a = resumed.history(i);
    const v1::EpochMetrics& b = uninterrupted.history(i);
    EXPECT_EQ(a.epoch(), b.epoch());
    EXPECT_NEAR(a.train_loss(), b.train_loss(), 1e-6) << "epoch " << b.epoch();
    EXPECT_NEAR(a.val_loss(), b.val_loss(), 1e-6) << "epoch " << b.epoch();
    EXPECT_EQ(a.train_accuracy(), b.train_accuracy()) << "epoch " << b.epoch();
    EXPECT_EQ(a.val_accuracy(), b.val_accuracy()) << "epoch " << b.epoch();
  }
}

}  // namespace kaizen::test_util
