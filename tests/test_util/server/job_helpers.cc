#include "tests/test_util/server/job_helpers.h"

#include <gtest/gtest.h>

#include <chrono>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/lib/kaizen_client.h"
#include "tests/test_util/wait.h"

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

std::vector<std::string> LongClassNames(int count) {
  std::vector<std::string> names;
  for (int c = 0; c < count; ++c) {
    names.push_back(absl::StrCat("class ", c, " ", std::string(100, static_cast<char>('a' + c))));
  }
  return names;
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

void JobServerTest::StartServer(const std::function<void(api::KaizenServer::Options&)>& adjust) {
  jobs_.reset();
  s_ = LoopbackServer();
  api::KaizenServer::Options o = LoopbackOptions(data_.path());
  o.metrics_port = -1;
  if (adjust) adjust(o);
  absl::StatusOr<LoopbackServer> s = StartLoopbackServer(o);
  ASSERT_TRUE(s.ok()) << s.status();
  s_ = *std::move(s);
  jobs_ = v1::FineTuneService::NewStub(s_.channel);
}

bool JobServerTest::Connect(int port) {
  jobs_.reset();
  s_ = LoopbackServer();
  s_.channel =
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials());
  s_.client = std::make_unique<client::KaizenClient>(s_.channel);
  jobs_ = v1::FineTuneService::NewStub(s_.channel);
  return WaitUntil([&] { return s_.client->ListDatasets().ok(); });
}

void JobServerTest::UploadSubset(const std::string& name, const std::vector<int>& classes,
                                 int per_class, int skip, const std::string& which,
                                 std::vector<std::string> class_names) {
  if (class_names.empty()) {
    for (int c : classes) class_names.push_back(absl::StrCat("class", c));
  }
  absl::StatusOr<v1::Dataset> d = UploadFashionSubset(*s_.client, files_.path(), name, classes,
                                                      per_class, class_names, skip, which);
  ASSERT_TRUE(d.ok()) << d.status();
}

absl::StatusOr<v1::Job> JobServerTest::TryStart(const v1::StartFineTuneRequest& r) {
  return s_.client->StartFineTune(r);
}

v1::Job JobServerTest::Start(const v1::StartFineTuneRequest& r) {
  absl::StatusOr<v1::Job> job = TryStart(r);
  EXPECT_TRUE(job.ok()) << job.status();
  return job.ok() ? *job : v1::Job();
}

v1::Job JobServerTest::GetJob(const std::string& id) {
  absl::StatusOr<v1::Job> job = s_.client->GetJob(id);
  EXPECT_TRUE(job.ok()) << job.status();
  return job.ok() ? *job : v1::Job();
}

v1::Job JobServerTest::WaitForState(const std::string& id, const std::vector<v1::JobState>& states,
                                    absl::Duration timeout) {
  absl::StatusOr<v1::Job> job = WaitForJob(*s_.client, id, states, timeout);
  if (job.ok()) return *job;
  ADD_FAILURE() << job.status();
  return GetJob(id);
}

v1::Job JobServerTest::WaitForSuccess(const std::string& id) {
  v1::Job end = WaitForState(id, {v1::JOB_STATE_SUCCEEDED});
  EXPECT_EQ(end.state(), v1::JOB_STATE_SUCCEEDED) << end.error();
  return end;
}

std::vector<std::string> JobServerTest::Messages(const std::vector<v1::JobEvent>& events) {
  std::vector<std::string> out;
  for (const v1::JobEvent& e : events) {
    if (e.event_case() == v1::JobEvent::kMessage) out.push_back(e.message());
  }
  return out;
}

int JobServerTest::Count(const std::vector<std::string>& lines, const std::string& part) {
  int n = 0;
  for (const std::string& l : lines) n += absl::StrContains(l, part) ? 1 : 0;
  return n;
}

}  // namespace kaizen::test_util
