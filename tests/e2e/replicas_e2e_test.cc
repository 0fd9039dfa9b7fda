// Several API replicas on one PostgreSQL database: two kaizen-server
// processes share a catalogue (a private PostgreSQL server,
// tests/postgres/postgres.sh) and a data directory. Jobs are claimed once,
// a replica killed with SIGKILL loses its job to the other, which resumes it
// from the last checkpoint, and WatchJob and Predict work through either.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/lib/kaizen_client.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/postgres.h"
#include "tests/test_util/server/job_helpers.h"
#include "tests/test_util/server_process.h"
#include "tests/test_util/wait.h"

namespace kaizen {
namespace {

using v1::Job;
using v1::JobEvent;

class ReplicasE2E : public test_util::JobServerTest {
 protected:
  void SetUp() override {
    absl::StatusOr<std::string> url = test_util::FreshPostgresDatabase();
    ASSERT_TRUE(url.ok()) << url.status();
    url_ = *url;
  }
  // Replica `name` on a port of its own over the shared data directory.
  std::unique_ptr<test_util::ServerProcess> StartReplica(const std::string& name, int* port) {
    *port = test_util::FreeLoopbackPort();
    return std::make_unique<test_util::ServerProcess>(
        KAIZEN_BINARY_DIR, data_.path(), *port,
        std::vector<std::string>{"--database=" + url_, "--replica_id=" + name,
                                 "--job_lease_seconds=3"});
  }
  // The replica that the job's events say runs it last ("replica X runs
  // this job").
  static std::string Runner(const std::vector<std::string>& messages) {
    std::string runner;
    for (const std::string& m : messages) {
      if (absl::StartsWith(m, "replica ") && absl::EndsWith(m, " runs this job")) {
        runner = m.substr(8, m.size() - 8 - 14);
      }
    }
    return runner;
  }
  std::vector<std::string> MessagesOf(const std::string& id) { return Messages(Watch(id)); }
  // Runner() of a job that is still running: reads its stream until the
  // message, then lets go.
  std::string RunnerSoFar(const std::string& id) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::WatchJobRequest r;
    r.set_id(id);
    std::unique_ptr<grpc::ClientReader<JobEvent>> reader = jobs_->WatchJob(&ctx, r);
    JobEvent e;
    std::string runner;
    while (runner.empty() && reader->Read(&e)) runner = Runner({e.message()});
    ctx.TryCancel();
    reader->Finish().IgnoreError();
    return runner;
  }
  int64_t PredictVersion(const std::string& model) {
    v1::PredictRequest r;
    r.set_model(model);
    r.add_inputs()->set_encoded_image(test_util::EncodePng(28, 28, 1, 3));
    absl::StatusOr<v1::PredictResponse> answer = s_.client->Predict(r, absl::Seconds(60));
    if (answer.ok()) return answer->version();
    return absl::IsNotFound(answer.status()) ? kNoSuchModel : -2;
  }
  // PredictVersion's answer when Predict says NOT_FOUND (-2: another error).
  static constexpr int64_t kNoSuchModel = -1;

  // Replicas a and b over one catalogue and data directory, with a
  // resnet-small job of `epochs` writing model `output` that has written its
  // first version; `runner` runs it, `other` does not.
  struct TwoReplicasAndAJob {
    std::map<std::string, int> ports;
    std::map<std::string, std::unique_ptr<test_util::ServerProcess>> replicas;
    Job job;
    std::string runner, other;
  };
  void StartTwoReplicasAndAJob(const std::string& output, int epochs, TwoReplicasAndAJob* out) {
    for (const std::string name : {"a", "b"}) {
      out->replicas[name] = StartReplica(name, &out->ports[name]);
    }
    ASSERT_TRUE(Connect(out->ports["a"]));
    UploadSubset("pets", {0, 1}, 50);
    out->job = Start(Request("resnet-small", "pets", output, v1::STRATEGY_SCRATCH, epochs));
    ASSERT_TRUE(test_util::WaitUntil([&] { return GetJob(out->job.id()).latest_version() >= 1; },
                                     absl::Minutes(3)));
    out->runner = RunnerSoFar(out->job.id());
    ASSERT_TRUE(out->runner == "a" || out->runner == "b") << out->runner;
    out->other = out->runner == "a" ? "b" : "a";
  }

  std::string url_;
};

TEST_F(ReplicasE2E, AKilledReplicasJobIsResumedByTheOtherAndWatchedThroughIt) {
  TwoReplicasAndAJob t;
  ASSERT_NO_FATAL_FAILURE(StartTwoReplicasAndAJob("out", 12, &t));
  const Job& job = t.job;
  const std::string& runner = t.runner;
  const std::string& other = t.other;
  // Whichever replica claimed the job is killed with epochs left to run.
  const Job before = GetJob(job.id());
  ASSERT_EQ(before.state(), v1::JOB_STATE_RUNNING);
  ASSERT_LT(before.epoch(), 10);
  t.replicas[runner]->Kill(SIGKILL);

  // The other replica takes the job over once the 3 s lease runs out, and
  // finishes it; its events and answers come through it.
  ASSERT_TRUE(Connect(t.ports[other]));
  const Job end = WaitForState(job.id(), {v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED});
  ASSERT_EQ(end.state(), v1::JOB_STATE_SUCCEEDED) << end.error();
  EXPECT_EQ(end.attempts(), 2);
  std::vector<int> epochs;
  for (const auto& m : end.history()) epochs.push_back(m.epoch());
  EXPECT_EQ(epochs, (std::vector<int>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}));  // continued
  const std::vector<std::string> messages = MessagesOf(job.id());
  EXPECT_EQ(Count(messages, absl::StrCat("replica ", runner,
                                         " stopped renewing its lease on this job; replica ", other,
                                         " takes it over from checkpoint version")),
            1);
  EXPECT_EQ(Count(messages, "resuming from checkpoint version"), 1);
  EXPECT_EQ(Runner(messages), other);
  EXPECT_EQ(PredictVersion("out"), end.latest_version());
}

TEST_F(ReplicasE2E, JobsSubmittedThroughBothAreClaimedOnceAndServedByEither) {
  int port_a = 0, port_b = 0;
  auto a = StartReplica("a", &port_a);
  auto b = StartReplica("b", &port_b);
  ASSERT_TRUE(Connect(port_a));
  UploadSubset("digits", {0, 1}, 20);
  // Six jobs, three through each replica at once.
  std::vector<std::string> ids(6);
  std::vector<std::thread> submitters;
  for (int i = 0; i < 6; ++i) {
    submitters.emplace_back([&, i] {
      auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", i % 2 ? port_b : port_a),
                                         grpc::InsecureChannelCredentials());
      auto stub = v1::FineTuneService::NewStub(channel);
      grpc::ClientContext ctx;
      Job job;
      if (stub->StartFineTune(
                  &ctx,
                  Request("cnn-small", "digits", absl::StrCat("m", i), v1::STRATEGY_SCRATCH, 2),
                  &job)
              .ok()) {
        ids[i] = job.id();
      }
    });
  }
  for (auto& t : submitters) t.join();
  std::vector<std::string> runners;
  for (int i = 0; i < 6; ++i) {
    ASSERT_FALSE(ids[i].empty()) << "job " << i << " was refused";
    const Job end = WaitForSuccess(ids[i]);
    EXPECT_EQ(end.attempts(), 1) << ids[i];
    const std::vector<JobEvent> events = Watch(ids[i]);
    int running = 0;
    for (const JobEvent& e : events) running += e.state() == v1::JOB_STATE_RUNNING;
    EXPECT_EQ(running, 1) << ids[i] << " was claimed more than once";
    runners.push_back(Runner(Messages(events)));
    EXPECT_TRUE(runners.back() == "a" || runners.back() == "b") << runners.back();
  }
  // Both replicas answer with every model's newest version, whichever wrote it.
  for (const int port : {port_a, port_b}) {
    ASSERT_TRUE(Connect(port));
    for (int i = 0; i < 6; ++i) {
      EXPECT_EQ(PredictVersion(absl::StrCat("m", i)), GetJob(ids[i]).latest_version())
          << "m" << i << " through port " << port;
    }
  }
}

// Cancelled and watched through the replica that does not run the job: the
// request waits on the job's lease until its replica acts on it, and the
// watcher gets every event, the other replica's included, up to CANCELLED.
TEST_F(ReplicasE2E, AJobIsWatchedAndCancelledThroughTheReplicaThatDoesNotRunIt) {
  TwoReplicasAndAJob t;
  ASSERT_NO_FATAL_FAILURE(StartTwoReplicasAndAJob("long", 40, &t));
  const Job& job = t.job;
  const std::string& runner = t.runner;
  const std::string& other = t.other;
  ASSERT_TRUE(Connect(t.ports[other]));
  std::vector<JobEvent> watched;
  std::thread watcher([&] { watched = Watch(job.id()); });
  grpc::ClientContext ctx;
  v1::CancelJobRequest cancel;
  cancel.set_id(job.id());
  Job answer;
  ASSERT_TRUE(jobs_->CancelJob(&ctx, cancel, &answer).ok());
  const Job end = WaitForState(
      job.id(), {v1::JOB_STATE_CANCELLED, v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED});
  watcher.join();
  EXPECT_EQ(end.state(), v1::JOB_STATE_CANCELLED) << end.error();
  EXPECT_LT(end.epoch(), 40);
  ASSERT_FALSE(watched.empty());
  EXPECT_EQ(watched.back().state(), v1::JOB_STATE_CANCELLED);
  for (size_t i = 0; i < watched.size(); ++i) {
    EXPECT_EQ(watched[i].sequence(), static_cast<int64_t>(i) + 1) << "gap or repeat";
  }
  const std::vector<std::string> messages = Messages(watched);
  EXPECT_EQ(Count(messages, absl::StrCat("cancellation requested through replica ", other,
                                         "; replica ", runner, " stops the job")),
            1);
  EXPECT_EQ(Count(messages, "cancellation requested; stopping after the current step"), 1);
}

// A model both replicas serve while a job writes its versions: the replica
// that does not run the job swaps in the versions the other writes (it reads
// new versions from the shared catalogue) instead of staying on the one it
// loaded, and stops serving versions deleted through the other replica.
TEST_F(ReplicasE2E, TheOtherReplicaSwapsInTheVersionsAJobWrites) {
  TwoReplicasAndAJob t;
  ASSERT_NO_FATAL_FAILURE(StartTwoReplicasAndAJob("swap", 10, &t));
  for (const auto& [name, port] : t.ports) {
    ASSERT_TRUE(Connect(port));
    EXPECT_GE(PredictVersion("swap"), 1) << "replica " << name;
  }
  ASSERT_EQ(GetJob(t.job.id()).state(), v1::JOB_STATE_RUNNING) << "the job ended too soon";
  const Job end = WaitForSuccess(t.job.id());
  ASSERT_TRUE(Connect(t.ports[t.other]));
  EXPECT_TRUE(test_util::WaitUntil([&] { return PredictVersion("swap") == end.latest_version(); },
                                   absl::Seconds(60)))
      << "replica " << t.other << ", which did not run the job, still answers with version "
      << PredictVersion("swap") << ", not " << end.latest_version();

  // The newest version deleted through the runner: the other replica falls
  // back to the newest that is left; the whole model deleted: it answers
  // NOT_FOUND instead of serving what it had loaded.
  ASSERT_TRUE(Connect(t.ports[t.runner]));
  ASSERT_TRUE(s_.client->DeleteModel("swap", end.latest_version()).ok());
  absl::StatusOr<v1::Model> left = s_.client->GetModel("swap", 0);
  ASSERT_TRUE(left.ok()) << left.status();
  ASSERT_LT(left->version(), end.latest_version());
  ASSERT_TRUE(Connect(t.ports[t.other]));
  EXPECT_TRUE(test_util::WaitUntil([&] { return PredictVersion("swap") == left->version(); },
                                   absl::Seconds(60)))
      << "replica " << t.other << " answers with version " << PredictVersion("swap")
      << " after version " << end.latest_version() << " was deleted through " << t.runner;
  ASSERT_TRUE(Connect(t.ports[t.runner]));
  ASSERT_TRUE(s_.client->DeleteModel("swap").ok());
  ASSERT_TRUE(Connect(t.ports[t.other]));
  EXPECT_TRUE(test_util::WaitUntil([&] { return PredictVersion("swap") == kNoSuchModel; },
                                   absl::Seconds(60)))
      << "replica " << t.other << " still serves version " << PredictVersion("swap")
      << " of a deleted model";
}

}  // namespace
}  // namespace kaizen
