// End-to-end tests of data-parallel jobs (StartFineTuneRequest.world_size):
// a real server on loopback runs a Fashion-MNIST job as rank 0 beside a
// kaizen-worker process (Gloo over loopback), writes versions that Predict
// serves, pauses and resumes the group from a checkpoint, fails promptly
// and precisely when a worker is killed, and refuses what cannot run data
// parallel with precise statuses.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "client/lib/kaizen_client.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/server/job_helpers.h"

namespace kaizen {
namespace {

using v1::Job;

class DataParallelE2E : public test_util::JobServerTest {
 protected:
  void SetUp() override { StartServer(); }

  static v1::StartFineTuneRequest TwoRanks(const std::string& output, int epochs) {
    v1::StartFineTuneRequest r =
        Request("cnn-small", "train", output, v1::STRATEGY_SCRATCH, epochs);
    r.mutable_hyperparameters()->set_batch_size(16);
    r.set_world_size(2);
    r.set_keep_checkpoints(10);
    return r;
  }

  // The job once it has written a version (or failed, or a minute passed).
  Job WaitForAVersion(const std::string& id) {
    Job now = GetJob(id);
    for (int i = 0; i < 600 && now.latest_version() == 0 && now.state() != v1::JOB_STATE_FAILED;
         ++i) {
      absl::SleepFor(absl::Milliseconds(100));
      now = GetJob(id);
    }
    return now;
  }
};

TEST_F(DataParallelE2E, ATwoProcessJobTrainsCheckpointsAndServes) {
  UploadSubset("train", {0, 1, 7}, 40);
  const Job done = WaitForSuccess(Start(TwoRanks("dp", 4)).id());
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error();
  EXPECT_EQ(done.world_size(), 2);
  ASSERT_EQ(done.history_size(), 4);
  EXPECT_LT(done.history(3).train_loss(), done.history(0).train_loss());
  const std::vector<std::string> messages = Messages(Watch(done.id()));
  EXPECT_EQ(Count(messages, "data parallel: 2 processes (rank 0 in the server, 1 kaizen-worker"),
            1);
  EXPECT_EQ(Count(messages, "data parallel: rank 0 spent"), 1);

  v1::PredictRequest r;
  r.set_model("dp");
  r.add_inputs()->set_encoded_image(test_util::EncodePng(28, 28, 1, 3));
  absl::StatusOr<v1::PredictResponse> answer = s_.client->Predict(r);
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->version(), done.latest_version());
  ASSERT_EQ(answer->predictions_size(), 1);
}

TEST_F(DataParallelE2E, APausedGroupResumesFromItsCheckpointAsAGroup) {
  UploadSubset("train", {0, 1, 7}, 40);
  const Job job = Start(TwoRanks("paused", 30));
  // Once the group has trained (a version exists), pause it.
  const Job now = WaitForAVersion(job.id());
  ASSERT_GE(now.latest_version(), 1) << now.error();
  ASSERT_TRUE(s_.client->PauseJob(job.id()).ok());
  const Job paused =
      WaitForState(job.id(), {v1::JOB_STATE_PAUSED, v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED});
  ASSERT_EQ(paused.state(), v1::JOB_STATE_PAUSED) << paused.error();
  EXPECT_LT(paused.step(), paused.total_steps());
  ASSERT_TRUE(s_.client->ResumeJob(job.id()).ok());
  const Job end = WaitForSuccess(job.id());
  ASSERT_EQ(end.state(), v1::JOB_STATE_SUCCEEDED) << end.error();
  EXPECT_EQ(end.history_size(), 30);
  const std::vector<std::string> messages = Messages(Watch(job.id()));
  EXPECT_EQ(Count(messages, "data parallel: 2 processes"), 2) << "once per run of the group";
}

// The kaizen-worker process whose command line names `job_id`'s folder.
pid_t WorkerOf(const std::string& job_id) {
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string pid = entry.path().filename();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(entry.path() / "cmdline");
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (cmdline.find("kaizen-worker") != std::string::npos &&
        cmdline.find("dp-" + job_id) != std::string::npos) {
      return static_cast<pid_t>(std::stol(pid));
    }
  }
  return -1;
}

TEST_F(DataParallelE2E, KillingAWorkerFailsTheJobPromptlyWithBothSidesAndKeepsItsVersions) {
  UploadSubset("train", {0, 1, 7}, 40);
  const Job job = Start(TwoRanks("killed", 200));
  const Job now = WaitForAVersion(job.id());
  ASSERT_GE(now.latest_version(), 1) << now.error();
  const pid_t worker = WorkerOf(job.id());
  ASSERT_GT(worker, 0);
  ASSERT_EQ(kill(worker, SIGKILL), 0);
  const absl::Time killed = absl::Now();
  const Job failed =
      WaitForState(job.id(), {v1::JOB_STATE_FAILED, v1::JOB_STATE_SUCCEEDED}, absl::Minutes(2));
  EXPECT_LT(absl::Now() - killed, absl::Seconds(30)) << "well within the 300 s timeout";
  ASSERT_EQ(failed.state(), v1::JOB_STATE_FAILED);
  EXPECT_NE(failed.error().find("rank 0 of 2"), std::string::npos) << failed.error();
  EXPECT_NE(failed.error().find("rank 1 was killed by signal 9"), std::string::npos)
      << failed.error();
  // What the group wrote before stays.
  EXPECT_TRUE(s_.client->GetModel("killed", now.latest_version()).ok());
  EXPECT_EQ(WorkerOf(job.id()), -1);
}

TEST_F(DataParallelE2E, WhatCannotRunDataParallelIsRefusedPrecisely) {
  UploadSubset("train", {0, 1}, 10);
  v1::StartFineTuneRequest too_many = TwoRanks("a", 1);
  too_many.set_world_size(9);
  absl::StatusOr<Job> refused = TryStart(too_many);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("world_size is 9; this server runs 1 to 8"),
            std::string::npos)
      << refused.status();
  v1::StartFineTuneRequest tuned = TwoRanks("b", 1);
  tuned.mutable_tuning()->set_max_trials(2);
  refused = TryStart(tuned);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("tuning trials run in one process"), std::string::npos)
      << refused.status();
}

}  // namespace
}  // namespace kaizen
