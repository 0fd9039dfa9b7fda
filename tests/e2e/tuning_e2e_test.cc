// End-to-end tests of automatic tuning (StartFineTuneRequest.tuning): real
// jobs on Fashion-MNIST through a real server on a loopback port. GetJob and
// the job's events show every trial and why the winner won, the final run
// trains with the winner, a pause in the middle of the search keeps the
// finished trials, and bad options are refused before the job is queued.
#include <gtest/gtest.h>
#include <signal.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/lib/kaizen_client.h"
#include "gmock/gmock.h"
#include "tests/test_util/server/job_helpers.h"
#include "tests/test_util/server_process.h"
#include "tests/test_util/temp_dir.h"
#include "tests/test_util/wait.h"

namespace kaizen {
namespace {

using ::testing::HasSubstr;
using v1::Job;
using v1::JobEvent;

class TuningE2EBase : public test_util::JobServerTest {
 protected:
  // 6 images per class: 3-fold cross-validation scores the trials.
  void UploadFew() { UploadSubset("few", {0, 1, 7}, 6); }

  // SCRATCH on cnn-small for 4 epochs: the search varies the learning rate;
  // `trials` trials, each round keeping half.
  static v1::StartFineTuneRequest Tuned(const std::string& output, int trials) {
    v1::StartFineTuneRequest r = Request("cnn-small", "few", output, v1::STRATEGY_SCRATCH, 4);
    r.mutable_hyperparameters()->set_batch_size(6);
    r.mutable_tuning()->set_max_trials(trials);
    r.mutable_tuning()->set_reduction_factor(2);
    r.mutable_tuning()->set_seed(3);
    return r;
  }
};

class TuningE2E : public TuningE2EBase {
 protected:
  void SetUp() override {
    StartServer();
    UploadFew();
  }
};

// A server process of its own, to kill.
class TuningRestartE2E : public TuningE2EBase {};

TEST_F(TuningE2E, GetJobAndTheEventsShowEveryTrialAndTheFinalRunUsesTheWinner) {
  const Job end = WaitForSuccess(Start(Tuned("tuned", 4)).id());
  ASSERT_EQ(end.state(), v1::JOB_STATE_SUCCEEDED) << end.error();
  const v1::TuningResult& t = end.tuning();
  EXPECT_TRUE(t.done());
  EXPECT_THAT(t.scoring(), HasSubstr("3-fold stratified cross-validation"));
  // 4 trials at 2 epochs, the best 2 at 4.
  ASSERT_EQ(t.trials_size(), 6);
  const v1::TuningTrial* winner = nullptr;
  for (const v1::TuningTrial& x : t.trials()) {
    EXPECT_EQ(x.epochs(), x.round() == 1 ? 2 : 4);
    EXPECT_FALSE(x.outcome().empty());
    EXPECT_GT(x.seconds(), 0);
    if (x.outcome() == "winner") winner = &x;
  }
  ASSERT_NE(winner, nullptr);
  EXPECT_EQ(t.winner(), winner->trial());
  EXPECT_THAT(t.reason(), HasSubstr(absl::StrCat("trial ", winner->trial())));
  EXPECT_THAT(t.reason(), HasSubstr("best mean validation accuracy in round 2"));
  // The final run: the winner's learning rate, all 18 images, 4 epochs.
  EXPECT_DOUBLE_EQ(end.resolved_hyperparameters().learning_rate(), winner->learning_rate());
  EXPECT_EQ(end.total_epochs(), 4);
  EXPECT_EQ(end.history_size(), 4);
  EXPECT_GE(end.latest_version(), 1);

  const std::vector<std::string> lines = Messages(Watch(end.id()));
  EXPECT_EQ(Count(lines, "tuning: 4 trials over learning_rate in 2 rounds"), 1);
  EXPECT_EQ(Count(lines, "tuning trial "), 6) << "one line per trial";
  EXPECT_EQ(Count(lines, "tuning round 1 of 2: trials "), 1);
  EXPECT_EQ(Count(lines, "tuning: " + t.reason()), 1);
}

TEST_F(TuningE2E, APauseDuringTheSearchKeepsTheFinishedTrials) {
  // 8 trials: 8, then 4, then 2 runs; time enough to pause in between.
  const std::string id = Start(Tuned("paused", 8)).id();
  ASSERT_TRUE(test_util::WaitUntil([&] { return GetJob(id).tuning().trials_size() >= 2; },
                                   absl::Minutes(3)));
  ASSERT_TRUE(s_.client->PauseJob(id).ok());
  const Job paused =
      WaitForState(id, {v1::JOB_STATE_PAUSED, v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED});
  ASSERT_EQ(paused.state(), v1::JOB_STATE_PAUSED) << paused.error();
  const int kept = paused.tuning().trials_size();
  ASSERT_GE(kept, 2);
  ASSERT_FALSE(paused.tuning().done()) << "the search was still running";
  EXPECT_EQ(paused.latest_version(), 0) << "no version before the final run";

  ASSERT_TRUE(s_.client->ResumeJob(id).ok());
  const Job end = WaitForSuccess(id);
  ASSERT_EQ(end.state(), v1::JOB_STATE_SUCCEEDED) << end.error();
  EXPECT_TRUE(end.tuning().done());
  EXPECT_EQ(end.tuning().trials_size(), 8 + 4 + 2);
  // The trials finished before the pause are the same records.
  for (int i = 0; i < kept; ++i) {
    const v1::TuningTrial& before = paused.tuning().trials(i);
    const v1::TuningTrial& after = end.tuning().trials(i);
    EXPECT_EQ(before.trial(), after.trial());
    EXPECT_EQ(before.round(), after.round());
    EXPECT_DOUBLE_EQ(before.val_accuracy(), after.val_accuracy());
    EXPECT_DOUBLE_EQ(before.seconds(), after.seconds());
  }
  const std::vector<std::string> lines = Messages(Watch(id));
  EXPECT_EQ(Count(lines, absl::StrCat("continues from its tuning search, keeping the ", kept,
                                      " trial runs it finished")),
            1);
  EXPECT_EQ(Count(lines, absl::StrCat("tuning continues; the ", kept,
                                      " trial runs finished before the stop are kept")),
            1);
  // Each trial was trained, and announced, once.
  EXPECT_EQ(Count(lines, "tuning trial "), 14);
}

TEST_F(TuningE2E, BadTuningOptionsAreRefusedBeforeTheJobIsQueued) {
  v1::StartFineTuneRequest r = Tuned("bad", 65);
  absl::StatusOr<Job> job = TryStart(r);
  ASSERT_EQ(job.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(job.status().message(), "tuning.max_trials is 65; it must be in [0, 64]");
  r = Tuned("bad", 4);
  r.mutable_tuning()->set_reduction_factor(1);
  job = TryStart(r);
  ASSERT_EQ(job.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(job.status().message(), "tuning.reduction_factor is 1; it must be in [2, 10]");
  absl::StatusOr<v1::ListJobsResponse> listed = s_.client->ListJobs({});
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->jobs_size(), 0);
}

// kill -9 in the middle of the search: after a restart the job keeps the
// trials it had stored, with their figures and the tuning time, and trains
// only the rest.
TEST_F(TuningRestartE2E, AKilledServerResumesTheSearchWithTheTrialsItStored) {
  test_util::TempDir dir;
  const int port = test_util::FreeLoopbackPort();
  auto server = std::make_unique<test_util::ServerProcess>(KAIZEN_BINARY_DIR, dir.path(), port);
  ASSERT_TRUE(Connect(port));
  UploadFew();
  const std::string id = Start(Tuned("killed", 8)).id();
  ASSERT_TRUE(test_util::WaitUntil([&] { return GetJob(id).tuning().trials_size() >= 2; },
                                   absl::Minutes(3)));
  const Job before = GetJob(id);
  server->Kill(SIGKILL);

  server = std::make_unique<test_util::ServerProcess>(KAIZEN_BINARY_DIR, dir.path(), port);
  ASSERT_TRUE(Connect(port));
  const Job end = WaitForState(id, {v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED});
  const std::vector<std::string> lines = Messages(Watch(id));
  server.reset();
  ASSERT_EQ(end.state(), v1::JOB_STATE_SUCCEEDED) << end.error();
  EXPECT_EQ(end.attempts(), 2);
  ASSERT_TRUE(end.tuning().done());
  EXPECT_EQ(end.tuning().trials_size(), 8 + 4 + 2);
  ASSERT_GE(before.tuning().trials_size(), 2);
  for (int i = 0; i < before.tuning().trials_size(); ++i) {
    const v1::TuningTrial& stored = before.tuning().trials(i);
    const v1::TuningTrial& kept = end.tuning().trials(i);
    EXPECT_EQ(stored.trial(), kept.trial());
    EXPECT_EQ(stored.round(), kept.round());
    EXPECT_DOUBLE_EQ(stored.val_accuracy(), kept.val_accuracy());
    EXPECT_DOUBLE_EQ(stored.seconds(), kept.seconds());
  }
  // The time before the kill counts against the budget.
  EXPECT_GE(end.tuning().seconds(), before.tuning().seconds());
  EXPECT_EQ(Count(lines, "requeued to resume from its tuning search, keeping the "), 1);
  EXPECT_EQ(Count(lines, "trial runs finished before the stop are kept"), 1);
}

}  // namespace
}  // namespace kaizen
