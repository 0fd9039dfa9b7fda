// End-to-end tests of fine-tuning: real jobs on Fashion-MNIST subsets through
// a real server on a loopback port (in-process, or a kaizen-server process
// for the kill -9 test), watched over WatchJob.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <torch/script.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "client/lib/kaizen_client.h"
#include "google/protobuf/util/time_util.h"
#include "kaizen/v1/finetune_service.grpc.pb.h"
#include "server/api/server.h"
#include "tests/test_util/fashion_mnist.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/python.h"
#include "tests/test_util/server/job_helpers.h"
#include "tests/test_util/server/loopback_server.h"
#include "tests/test_util/server_process.h"
#include "tests/test_util/temp_dir.h"
#include "tests/test_util/wait.h"

namespace kaizen {
namespace {

using test_util::ExpectSameHistory;
using test_util::StatesOf;

using v1::Job;
using v1::JobEvent;

class FineTuneE2E : public test_util::JobServerTest {
 protected:
  void SetUp() override { StartServer(); }

  // Reads `id`'s events until its first step is reported (the job is
  // RUNNING), keeping the stream open; the caller finishes it.
  struct OpenWatch {
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientReader<JobEvent>> reader;
    std::vector<JobEvent> events;
  };
  std::unique_ptr<OpenWatch> WatchUntilFirstStep(const std::string& id) {
    auto w = std::make_unique<OpenWatch>();
    w->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(5));
    v1::WatchJobRequest r;
    r.set_id(id);
    w->reader = jobs_->WatchJob(&w->ctx, r);
    JobEvent e;
    while (w->reader->Read(&e)) {
      w->events.push_back(e);
      if (e.has_progress()) break;
    }
    EXPECT_FALSE(w->events.empty() || !w->events.back().has_progress())
        << "job " << id << " reported no step";
    return w;
  }

  // A short job with several steps per epoch: 120 images, 96 to train on in
  // batches of 16, 4 epochs of 6 steps.
  static v1::StartFineTuneRequest PausableRequest(const std::string& output) {
    auto r = Request("resnet-small", "pets", output, v1::STRATEGY_SCRATCH, 4);
    r.mutable_hyperparameters()->set_batch_size(16);
    return r;
  }
};

TEST_F(FineTuneE2E, StartFineTuneValidatesItsRequest) {
  UploadSubset("pets", {0, 1}, 20);
  struct Case {
    v1::StartFineTuneRequest req;
    absl::StatusCode code;
    std::string needle;
  };
  std::vector<Case> cases;
  cases.push_back({Request("nope", "pets", "out", v1::STRATEGY_SCRATCH, 1),
                   absl::StatusCode::kNotFound, "base_model"});
  cases.push_back({Request("cnn-small", "nope", "out", v1::STRATEGY_SCRATCH, 1),
                   absl::StatusCode::kNotFound, "dataset"});
  cases.push_back({Request("cnn-small", "pets", "../out", v1::STRATEGY_SCRATCH, 1),
                   absl::StatusCode::kInvalidArgument, "output_model"});
  cases.push_back({Request("cnn-small", "pets", "resnet-small", v1::STRATEGY_SCRATCH, 1),
                   absl::StatusCode::kAlreadyExists, "built-in"});
  cases.push_back({Request("cnn-small", "pets", "out", v1::STRATEGY_UNSPECIFIED, 1),
                   absl::StatusCode::kInvalidArgument, "strategy"});
  // A built-in has no class list to continue.
  cases.push_back({Request("cnn-small", "pets", "out", v1::STRATEGY_INCREMENTAL, 1),
                   absl::StatusCode::kFailedPrecondition, "has no class names"});
  cases.push_back({Request("cnn-small", "pets", "out", v1::STRATEGY_DISTILL, 1),
                   absl::StatusCode::kInvalidArgument, "distillation.teacher_model is empty"});
  auto bad_lr = Request("cnn-small", "pets", "out", v1::STRATEGY_SCRATCH, 1);
  bad_lr.mutable_hyperparameters()->set_learning_rate(-1);
  cases.push_back({bad_lr, absl::StatusCode::kInvalidArgument, "learning_rate"});
  for (const Case& c : cases) {
    absl::StatusOr<Job> job = TryStart(c.req);
    EXPECT_EQ(job.status().code(), c.code) << job.status();
    EXPECT_NE(job.status().message().find(c.needle), absl::string_view::npos) << job.status();
  }
  grpc::ClientContext ctx;
  v1::ListJobsResponse list;
  ASSERT_TRUE(jobs_->ListJobs(&ctx, v1::ListJobsRequest(), &list).ok());
  EXPECT_EQ(list.jobs_size(), 0);
}

TEST_F(FineTuneE2E, RepeatedRequestIdReturnsTheSameJob) {
  UploadSubset("pets", {0, 1}, 20);
  auto r = Request("cnn-small", "pets", "out", v1::STRATEGY_SCRATCH, 1);
  r.set_request_id("req-42");
  auto a = TryStart(r);
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = TryStart(r);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->id(), b->id());
  WaitForState(a->id(), {v1::JOB_STATE_SUCCEEDED});
}

// SCRATCH pretrains a base on classes 0-4; FEATURE_EXTRACTION, FINE_TUNE and
// FULL then transfer it to classes 5-9. Every job must succeed, write model
// versions and report its epochs.
TEST_F(FineTuneE2E, EveryStrategyRunsOnAFashionMnistSubset) {
  UploadSubset("fm-0-4", {0, 1, 2, 3, 4}, 60);
  UploadSubset("fm-5-9", {5, 6, 7, 8, 9}, 20);
  auto base = TryStart(Request("cnn-small", "fm-0-4", "base", v1::STRATEGY_SCRATCH, 2));
  ASSERT_TRUE(base.ok()) << base.status();
  Job done = WaitForState(base->id(), {v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED});
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error();
  EXPECT_EQ(done.history_size(), 2);
  EXPECT_GE(done.latest_version(), 2);

  for (auto strategy :
       {v1::STRATEGY_FEATURE_EXTRACTION, v1::STRATEGY_FINE_TUNE, v1::STRATEGY_FULL}) {
    const std::string out = absl::StrCat("t-", v1::Strategy_Name(strategy).substr(9));
    std::string lower;
    for (char c : out) lower += static_cast<char>(c == '_' ? '-' : std::tolower(c));
    auto job = TryStart(Request("base", "fm-5-9", lower, strategy, 2));
    ASSERT_TRUE(job.ok()) << job.status();
    Job end = WaitForState(job->id(), {v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED});
    ASSERT_EQ(end.state(), v1::JOB_STATE_SUCCEEDED)
        << v1::Strategy_Name(strategy) << ": " << end.error();
    EXPECT_EQ(end.history_size(), 2);
    auto model = s_.client->GetModel(lower);
    ASSERT_TRUE(model.ok()) << model.status();
    EXPECT_EQ(model->source(), v1::MODEL_SOURCE_FINE_TUNED);
    EXPECT_EQ(model->head().out_features(), 5);
    EXPECT_EQ(model->class_names_size(), 5);
    EXPECT_EQ(model->job_id(), job->id());
  }
}

TEST_F(FineTuneE2E, WatchReplaysEveryEventOnceInOrderAndResumes) {
  UploadSubset("pets", {0, 1}, 40);
  auto job = TryStart(Request("cnn-small", "pets", "out", v1::STRATEGY_SCRATCH, 2));
  ASSERT_TRUE(job.ok()) << job.status();
  grpc::Status st;
  std::vector<JobEvent> live = Watch(job->id(), 0, &st);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_FALSE(live.empty());
  for (size_t i = 0; i < live.size(); ++i)
    EXPECT_EQ(live[i].sequence(), static_cast<int64_t>(i + 1));
  EXPECT_EQ(live.front().state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(live.back().state(), v1::JOB_STATE_SUCCEEDED);
  int epochs = 0, checkpoints = 0;
  for (const auto& e : live) {
    epochs += e.has_epoch_summary();
    checkpoints += e.has_checkpoint();
  }
  EXPECT_EQ(epochs, 2);
  EXPECT_GE(checkpoints, 2);
  // A finished job replays everything, and resuming skips what was seen.
  std::vector<JobEvent> replay = Watch(job->id(), 0);
  ASSERT_EQ(replay.size(), live.size());
  std::vector<JobEvent> tail = Watch(job->id(), 3);
  ASSERT_EQ(tail.size(), live.size() - 3);
  EXPECT_EQ(tail.front().sequence(), 4);
  grpc::Status missing;
  Watch("ft-nope", 0, &missing);
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(FineTuneE2E, FiveHundredWatchersEachSeeTheWholeStream) {
  UploadSubset("pets", {0, 1}, 40);
  auto r = Request("cnn-small", "pets", "out", v1::STRATEGY_SCRATCH, 3);
  auto job = TryStart(r);
  ASSERT_TRUE(job.ok()) << job.status();
  constexpr int kWatchers = 500;
  std::vector<std::vector<JobEvent>> seen(kWatchers);
  std::vector<grpc::Status> statuses(kWatchers);
  // Each watcher is a stream on one shared channel; a few client threads
  // drive them so the test does not need 500 threads either.
  std::vector<std::thread> threads;
  for (int t = 0; t < 10; ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::unique_ptr<grpc::ClientContext>> ctxs;
      std::vector<std::unique_ptr<grpc::ClientReader<JobEvent>>> readers;
      for (int i = t; i < kWatchers; i += 10) {
        ctxs.push_back(std::make_unique<grpc::ClientContext>());
        v1::WatchJobRequest req;
        req.set_id(job->id());
        readers.push_back(jobs_->WatchJob(ctxs.back().get(), req));
      }
      for (size_t k = 0; k < readers.size(); ++k) {
        const int i = t + static_cast<int>(k) * 10;
        JobEvent e;
        while (readers[k]->Read(&e)) seen[i].push_back(e);
        statuses[i] = readers[k]->Finish();
      }
    });
  }
  for (auto& th : threads) th.join();
  Job end = GetJob(job->id());
  ASSERT_EQ(end.state(), v1::JOB_STATE_SUCCEEDED) << end.error();
  for (int i = 0; i < kWatchers; ++i) {
    ASSERT_TRUE(statuses[i].ok()) << i << ": " << statuses[i].error_message();
    ASSERT_EQ(static_cast<int64_t>(seen[i].size()), end.last_sequence()) << "watcher " << i;
    for (size_t k = 0; k < seen[i].size(); ++k) {
      ASSERT_EQ(seen[i][k].sequence(), static_cast<int64_t>(k + 1)) << "watcher " << i;
    }
  }
}

TEST_F(FineTuneE2E, CancelStopsARunningJobAndKeepsItsCheckpoint) {
  UploadSubset("pets", {0, 1}, 200);
  auto job = TryStart(Request("resnet-small", "pets", "out", v1::STRATEGY_SCRATCH, 50));
  ASSERT_TRUE(job.ok()) << job.status();
  // Wait for the first checkpoint, then cancel.
  ASSERT_TRUE(test_util::WaitUntil([&] { return GetJob(job->id()).latest_version() >= 1; },
                                   absl::Minutes(3)));
  grpc::ClientContext ctx;
  v1::CancelJobRequest cr;
  cr.set_id(job->id());
  Job resp;
  ASSERT_TRUE(jobs_->CancelJob(&ctx, cr, &resp).ok());
  Job end = WaitForState(job->id(),
                         {v1::JOB_STATE_CANCELLED, v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED},
                         absl::Seconds(60));
  EXPECT_EQ(end.state(), v1::JOB_STATE_CANCELLED) << end.error();
  EXPECT_LT(end.epoch(), 50);
  EXPECT_GE(end.latest_version(), 1);
  auto model = s_.client->GetModel("out", end.latest_version());
  EXPECT_TRUE(model.ok()) << model.status();
  grpc::ClientContext again;
  EXPECT_EQ(jobs_->CancelJob(&again, cr, &resp).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

// A model that passes the upload check (eval mode) but produces NaN while
// training: the job must fail with a clear error and the server carry on.
TEST_F(FineTuneE2E, ADivergingJobFailsClearlyAndTheServerCarriesOn) {
  UploadSubset("pets", {0, 1}, 40);
  const std::string script = files_.File("nan_model.py");
  const std::string model = files_.File("nan_model.pt");
  test_util::WriteBinaryFile(script,
                             "import sys, torch\n"
                             "class M(torch.nn.Module):\n"
                             "    def __init__(self):\n"
                             "        super().__init__()\n"
                             "        self.conv = torch.nn.Conv2d(1, 4, 3)\n"
                             "        self.fc = torch.nn.Linear(4, 2)\n"
                             "    def forward(self, x):\n"
                             "        x = torch.relu(self.conv(x)).mean(dim=(2, 3))\n"
                             "        if self.training:\n"
                             "            x = x * float('nan')\n"
                             "        return self.fc(x)\n"
                             "torch.jit.script(M()).save(sys.argv[1])\n");
  const absl::StatusOr<std::string> saved = test_util::RunPython({script, model});
  ASSERT_TRUE(saved.ok()) << saved.status();
  v1::UploadModelHeader h;
  h.set_name("nan-model");
  for (int d : {1, 28, 28}) h.add_input_shape(d);
  ASSERT_TRUE(s_.client->UploadModel(h, model).ok());
  auto job = TryStart(Request("nan-model", "pets", "bad", v1::STRATEGY_FULL, 3));
  ASSERT_TRUE(job.ok()) << job.status();
  Job end = WaitForState(job->id(), {v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED});
  EXPECT_EQ(end.state(), v1::JOB_STATE_FAILED);
  EXPECT_NE(end.error().find("NaN"), std::string::npos) << end.error();
  auto good = TryStart(Request("cnn-small", "pets", "good", v1::STRATEGY_SCRATCH, 1));
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(WaitForState(good->id(), {v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED}).state(),
            v1::JOB_STATE_SUCCEEDED);
}

TEST_F(FineTuneE2E, DatasetsAndModelsInUseCannotBeDeleted) {
  UploadSubset("pets", {0, 1}, 200);
  auto job = TryStart(Request("resnet-small", "pets", "out", v1::STRATEGY_SCRATCH, 50));
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(s_.client->DeleteDataset("pets").code(), absl::StatusCode::kFailedPrecondition);
  grpc::ClientContext ctx;
  v1::CancelJobRequest cr;
  cr.set_id(job->id());
  Job resp;
  ASSERT_TRUE(jobs_->CancelJob(&ctx, cr, &resp).ok());
  WaitForState(job->id(), {v1::JOB_STATE_CANCELLED});
  EXPECT_TRUE(s_.client->DeleteDataset("pets").ok());
}

// A checkpoint downloaded from the service loads in Debian's python3-torch on
// its own and gives the same logits as LibTorch on the same input.
TEST_F(FineTuneE2E, DownloadedCheckpointMatchesInPython) {
  UploadSubset("pets", {0, 1, 2}, 30);
  auto job = TryStart(Request("resnet-small", "pets", "out", v1::STRATEGY_SCRATCH, 1));
  ASSERT_TRUE(job.ok());
  ASSERT_EQ(WaitForState(job->id(), {v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED}).state(),
            v1::JOB_STATE_SUCCEEDED);
  const std::string file = files_.File("out.pt");
  ASSERT_TRUE(s_.client->DownloadModel("out", 0, file).ok());
  torch::jit::Module m = torch::jit::load(file);
  m.eval();
  torch::manual_seed(0);
  torch::Tensor x = torch::linspace(-1, 1, 2 * 28 * 28).reshape({2, 1, 28, 28});
  torch::Tensor cpp = m.forward({x}).toTensor();
  const std::string script = files_.File("check.py");
  test_util::WriteBinaryFile(script,
                             "import sys, torch\n"
                             "extra = {'kaizen.json': ''}\n"
                             "m = torch.jit.load(sys.argv[1], _extra_files=extra)\n"
                             "m.eval()\n"
                             "assert 'class_names' in extra['kaizen.json'].decode()\n"
                             "x = torch.linspace(-1, 1, 2 * 28 * 28).reshape(2, 1, 28, 28)\n"
                             "with torch.no_grad():\n"
                             "    y = m(x)\n"
                             "print(' '.join('%.9g' % v for v in y.flatten().tolist()))\n");
  const absl::StatusOr<std::string> out = test_util::RunPython({script, file});
  ASSERT_TRUE(out.ok()) << out.status();
  std::vector<std::string> values = absl::StrSplit(*out, ' ', absl::SkipWhitespace());
  ASSERT_EQ(static_cast<int64_t>(values.size()), cpp.numel());
  auto flat = cpp.flatten();
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_NEAR(std::stod(values[i]), flat[static_cast<int64_t>(i)].item<double>(), 1e-5) << i;
  }
}

// kill -9 while a job runs: after a restart the job is requeued, resumes from
// its last checkpoint and finishes; it never runs twice at once.
TEST_F(FineTuneE2E, KilledServerResumesTheJobFromItsCheckpoint) {
  test_util::TempDir dir;
  const int port = test_util::FreeLoopbackPort();
  // The process is reaped when the test ends, however it ends.
  auto server = std::make_unique<test_util::ServerProcess>(KAIZEN_BINARY_DIR, dir.path(), port);
  ASSERT_TRUE(Connect(port));
  // Four epochs are left when the server dies: seconds of margin for the kill.
  UploadSubset("pets", {0, 1}, 50);
  auto job = TryStart(Request("resnet-small", "pets", "out", v1::STRATEGY_SCRATCH, 6));
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_TRUE(test_util::WaitUntil([&] { return GetJob(job->id()).latest_version() >= 2; },
                                   absl::Minutes(3)));
  server->Kill(SIGKILL);

  server = std::make_unique<test_util::ServerProcess>(KAIZEN_BINARY_DIR, dir.path(), port);
  ASSERT_TRUE(Connect(port));
  Job end = WaitForState(job->id(), {v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED});
  const std::vector<JobEvent> events = Watch(job->id());
  server.reset();
  ASSERT_EQ(end.state(), v1::JOB_STATE_SUCCEEDED) << end.error();
  EXPECT_EQ(end.attempts(), 2);
  EXPECT_EQ(end.epoch(), 6);
  // Each epoch is reported once in the history: the resumed run continued
  // after the last checkpoint instead of starting over.
  std::vector<int> epochs;
  for (const auto& m : end.history()) epochs.push_back(m.epoch());
  EXPECT_EQ(epochs, (std::vector<int>{1, 2, 3, 4, 5, 6}));
  bool resumed = false;
  for (const auto& e : events) {
    resumed |= e.message().find("resuming from checkpoint") != std::string::npos;
  }
  EXPECT_TRUE(resumed);
}

// PauseJob in the middle of an epoch over gRPC: the job checkpoints and
// frees the worker, holds its dataset and output model, stays PAUSED across
// a server restart with a watcher that keeps streaming through PAUSED, and
// once resumed ends with the per-epoch losses of the same job run straight.
TEST_F(FineTuneE2E, APausedJobSurvivesARestartAndResumesWithTheSameLosses) {
  UploadSubset("pets", {0, 1}, 60);
  auto straight = TryStart(PausableRequest("straight"));
  ASSERT_TRUE(straight.ok()) << straight.status();
  const Job uninterrupted =
      WaitForState(straight->id(), {v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED});
  ASSERT_EQ(uninterrupted.state(), v1::JOB_STATE_SUCCEEDED) << uninterrupted.error();
  ASSERT_EQ(uninterrupted.total_steps(), 24);

  auto job = TryStart(PausableRequest("paused"));
  ASSERT_TRUE(job.ok()) << job.status();
  const std::string id = job->id();
  std::unique_ptr<OpenWatch> watch = WatchUntilFirstStep(id);
  absl::StatusOr<Job> answer = s_.client->PauseJob(id);
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->state(), v1::JOB_STATE_RUNNING) << "the pause takes effect after the step";
  EXPECT_EQ(answer->pause_reason(), "paused by a user");
  // The open stream reports the pause and goes on.
  JobEvent e;
  bool paused_event = false;
  while (!paused_event && watch->reader->Read(&e)) {
    paused_event = e.event_case() == JobEvent::kState && e.state() == v1::JOB_STATE_PAUSED;
  }
  EXPECT_TRUE(paused_event);
  Job paused =
      WaitForState(id, {v1::JOB_STATE_PAUSED, v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED});
  ASSERT_EQ(paused.state(), v1::JOB_STATE_PAUSED) << paused.error();
  EXPECT_GT(paused.step(), 0);
  EXPECT_LT(paused.step(), paused.total_steps());
  std::cout << "paused after step " << paused.step() << "/" << paused.total_steps() << "\n";
  EXPECT_GE(paused.latest_version(), 1) << "pausing writes a checkpoint";
  EXPECT_EQ(paused.pause_count(), 1);
  EXPECT_TRUE(s_.client->GetModel("paused", paused.latest_version()).ok());
  // Pausing a paused job returns it; what it uses cannot be deleted.
  absl::StatusOr<Job> again = s_.client->PauseJob(id);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->state(), v1::JOB_STATE_PAUSED);
  EXPECT_EQ(s_.client->DeleteDataset("pets").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s_.client->DeleteModel("paused").code(), absl::StatusCode::kFailedPrecondition);
  auto listed = s_.client->ListJobs({v1::JOB_STATE_PAUSED});
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->jobs_size(), 1);
  EXPECT_EQ(listed->jobs(0).id(), id);
  watch->ctx.TryCancel();
  watch->reader->Finish();

  // A graceful restart keeps it paused.
  StartServer();
  absl::SleepFor(absl::Milliseconds(500));
  EXPECT_EQ(GetJob(id).state(), v1::JOB_STATE_PAUSED);
  std::atomic<bool> watch_ended{false};
  grpc::Status watch_status;
  std::vector<JobEvent> events;
  std::thread watcher([&] {
    events = Watch(id, 0, &watch_status);
    watch_ended = true;
  });
  absl::SleepFor(absl::Milliseconds(500));
  EXPECT_FALSE(watch_ended) << "a watch of a PAUSED job must stay open";

  absl::StatusOr<Job> resumed = s_.client->ResumeJob(id);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->state(), v1::JOB_STATE_QUEUED);
  const Job end = WaitForState(id, {v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED});
  watcher.join();
  ASSERT_EQ(end.state(), v1::JOB_STATE_SUCCEEDED) << end.error();
  ExpectSameHistory(uninterrupted, end);
  EXPECT_TRUE(watch_status.ok()) << watch_status.error_message();
  EXPECT_EQ(StatesOf(events),
            (std::vector<v1::JobState>{v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING,
                                       v1::JOB_STATE_PAUSED, v1::JOB_STATE_QUEUED,
                                       v1::JOB_STATE_RUNNING, v1::JOB_STATE_SUCCEEDED}));

  // Ended and unknown jobs.
  for (bool pause : {true, false}) {
    absl::StatusOr<Job> ended = pause ? s_.client->PauseJob(id) : s_.client->ResumeJob(id);
    EXPECT_EQ(ended.status().code(), absl::StatusCode::kFailedPrecondition) << ended.status();
    EXPECT_NE(ended.status().message().find("JOB_STATE_SUCCEEDED"), absl::string_view::npos)
        << ended.status();
    absl::StatusOr<Job> unknown =
        pause ? s_.client->PauseJob("ft-nope") : s_.client->ResumeJob("ft-nope");
    EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound) << unknown.status();
  }
}

// kaizen-server --preempt with one worker: a high-priority job submitted
// while a low-priority one runs preempts it; the low one is checkpointed,
// PAUSED with the reason, back in the queue on its own, runs again once the
// high one has ended, and ends with the losses of an uninterrupted run.
TEST_F(FineTuneE2E, APreemptedJobResumesOnItsOwnWithTheSameLosses) {
  StartServer([](api::KaizenServer::Options& o) { o.preempt = true; });
  UploadSubset("pets", {0, 1}, 60);
  auto straight = TryStart(PausableRequest("straight"));
  ASSERT_TRUE(straight.ok()) << straight.status();
  const Job uninterrupted =
      WaitForState(straight->id(), {v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED});
  ASSERT_EQ(uninterrupted.state(), v1::JOB_STATE_SUCCEEDED) << uninterrupted.error();

  auto low = TryStart(PausableRequest("low"));
  ASSERT_TRUE(low.ok()) << low.status();
  std::unique_ptr<OpenWatch> watch = WatchUntilFirstStep(low->id());
  auto high_request = Request("cnn-small", "pets", "high", v1::STRATEGY_SCRATCH, 1);
  high_request.set_priority(5);
  auto high = TryStart(high_request);
  ASSERT_TRUE(high.ok()) << high.status();
  watch->ctx.TryCancel();
  watch->reader->Finish();

  const Job high_end = WaitForState(high->id(), {v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED});
  const Job low_end = WaitForState(low->id(), {v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED});
  ASSERT_EQ(high_end.state(), v1::JOB_STATE_SUCCEEDED) << high_end.error();
  ASSERT_EQ(low_end.state(), v1::JOB_STATE_SUCCEEDED) << low_end.error();
  EXPECT_EQ(low_end.preempted_by(), high->id());
  EXPECT_EQ(low_end.pause_reason(), absl::StrCat("preempted by job ", high->id()));
  EXPECT_EQ(low_end.pause_count(), 1);
  const std::vector<JobEvent> events = Watch(low->id());
  EXPECT_EQ(StatesOf(events),
            (std::vector<v1::JobState>{v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING,
                                       v1::JOB_STATE_PAUSED, v1::JOB_STATE_QUEUED,
                                       v1::JOB_STATE_RUNNING, v1::JOB_STATE_SUCCEEDED}));
  // It ran again only after the high-priority job had ended.
  int running = 0;
  for (const JobEvent& e : events) {
    if (e.event_case() == JobEvent::kState && e.state() == v1::JOB_STATE_RUNNING &&
        ++running == 2) {
      EXPECT_GE(google::protobuf::util::TimeUtil::TimestampToMilliseconds(e.time()),
                google::protobuf::util::TimeUtil::TimestampToMilliseconds(high_end.end_time()));
    }
  }
  ExpectSameHistory(uninterrupted, low_end);
}

}  // namespace
}  // namespace kaizen
