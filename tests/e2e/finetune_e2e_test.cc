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
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "client/lib/kaizen_client.h"
#include "kaizen/v1/finetune_service.grpc.pb.h"
#include "server/api/server.h"
#include "server/datasets/dataset_ingestor.h"
#include "tests/test_util/fashion_mnist.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen {
namespace {

using v1::Job;
using v1::JobEvent;

class FineTuneE2E : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(); }

  void StartServer() {
    client_.reset();
    server_.reset();
    api::KaizenServer::Options o;
    o.data_dir = data_.path();
    o.grpc_address = "127.0.0.1:0";
    o.metrics_port = -1;
    o.threads = 2;
    o.workers = 1;
    auto server = api::KaizenServer::Start(o);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    Connect(absl::StrCat("127.0.0.1:", server_->grpc_port()));
  }

  void Connect(const std::string& target) {
    channel_ = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
    client_ = std::make_unique<client::KaizenClient>(channel_);
    jobs_ = v1::FineTuneService::NewStub(channel_);
  }

  void UploadSubset(const std::string& name, const std::vector<int>& classes, int per_class,
                    int skip = 0, const std::string& which = "train") {
    const std::string images = files_.File(name + "-images"), labels = files_.File(name + "-labels");
    testing::WriteFashionSubset(which, classes, per_class, skip, images, labels);
    v1::UploadDatasetHeader h;
    h.set_name(name);
    h.set_format(v1::DATASET_FORMAT_IDX);
    for (int c : classes) h.add_class_names(absl::StrCat("class", c));
    auto d = client_->UploadDataset(h, {images, labels});
    ASSERT_TRUE(d.ok()) << d.status();
  }

  static v1::StartFineTuneRequest Request(const std::string& base, const std::string& dataset,
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

  absl::StatusOr<Job> Start(const v1::StartFineTuneRequest& r) {
    grpc::ClientContext ctx;
    Job job;
    grpc::Status st = jobs_->StartFineTune(&ctx, r, &job);
    if (!st.ok()) return absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message());
    return job;
  }

  Job GetJob(const std::string& id) {
    grpc::ClientContext ctx;
    v1::GetJobRequest r;
    r.set_id(id);
    Job job;
    EXPECT_TRUE(jobs_->GetJob(&ctx, r, &job).ok());
    return job;
  }

  // Collects every event of a job's WatchJob stream until it ends.
  std::vector<JobEvent> Watch(const std::string& id, int64_t after = 0, grpc::Status* status = nullptr) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(5));
    v1::WatchJobRequest r;
    r.set_id(id);
    r.set_after_sequence(after);
    auto reader = jobs_->WatchJob(&ctx, r);
    std::vector<JobEvent> out;
    JobEvent e;
    while (reader->Read(&e)) out.push_back(e);
    grpc::Status st = reader->Finish();
    if (status) *status = st;
    return out;
  }

  Job WaitForState(const std::string& id, std::vector<v1::JobState> states,
                   absl::Duration timeout = absl::Minutes(4)) {
    const absl::Time deadline = absl::Now() + timeout;
    Job job;
    while (absl::Now() < deadline) {
      job = GetJob(id);
      for (auto s : states) {
        if (job.state() == s) return job;
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
    ADD_FAILURE() << "job " << id << " stuck in " << v1::JobState_Name(job.state());
    return job;
  }

  testing::TempDir data_;
  testing::TempDir files_;
  std::unique_ptr<api::KaizenServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<client::KaizenClient> client_;
  std::unique_ptr<v1::FineTuneService::Stub> jobs_;
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
  cases.push_back({Request("cnn-small", "pets", "out", v1::STRATEGY_DISTILL, 1),
                   absl::StatusCode::kUnimplemented, "STRATEGY_DISTILL"});
  auto bad_lr = Request("cnn-small", "pets", "out", v1::STRATEGY_SCRATCH, 1);
  bad_lr.mutable_hyperparameters()->set_learning_rate(-1);
  cases.push_back({bad_lr, absl::StatusCode::kInvalidArgument, "learning_rate"});
  for (const Case& c : cases) {
    absl::StatusOr<Job> job = Start(c.req);
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
  auto a = Start(r);
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = Start(r);
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
  auto base = Start(Request("cnn-small", "fm-0-4", "base", v1::STRATEGY_SCRATCH, 2));
  ASSERT_TRUE(base.ok()) << base.status();
  Job done = WaitForState(base->id(), {v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED});
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error();
  EXPECT_EQ(done.history_size(), 2);
  EXPECT_GE(done.latest_version(), 2);

  for (auto strategy : {v1::STRATEGY_FEATURE_EXTRACTION, v1::STRATEGY_FINE_TUNE, v1::STRATEGY_FULL}) {
    const std::string out = absl::StrCat("t-", v1::Strategy_Name(strategy).substr(9));
    std::string lower;
    for (char c : out) lower += static_cast<char>(c == '_' ? '-' : std::tolower(c));
    auto job = Start(Request("base", "fm-5-9", lower, strategy, 2));
    ASSERT_TRUE(job.ok()) << job.status();
    Job end = WaitForState(job->id(), {v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED});
    ASSERT_EQ(end.state(), v1::JOB_STATE_SUCCEEDED) << v1::Strategy_Name(strategy) << ": " << end.error();
    EXPECT_EQ(end.history_size(), 2);
    auto model = client_->GetModel(lower);
    ASSERT_TRUE(model.ok()) << model.status();
    EXPECT_EQ(model->source(), v1::MODEL_SOURCE_FINE_TUNED);
    EXPECT_EQ(model->head().out_features(), 5);
    EXPECT_EQ(model->class_names_size(), 5);
    EXPECT_EQ(model->job_id(), job->id());
  }
}

TEST_F(FineTuneE2E, WatchReplaysEveryEventOnceInOrderAndResumes) {
  UploadSubset("pets", {0, 1}, 40);
  auto job = Start(Request("cnn-small", "pets", "out", v1::STRATEGY_SCRATCH, 2));
  ASSERT_TRUE(job.ok()) << job.status();
  grpc::Status st;
  std::vector<JobEvent> live = Watch(job->id(), 0, &st);
  ASSERT_TRUE(st.ok()) << st.error_message();
  ASSERT_FALSE(live.empty());
  for (size_t i = 0; i < live.size(); ++i) EXPECT_EQ(live[i].sequence(), static_cast<int64_t>(i + 1));
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
  auto job = Start(r);
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
  auto job = Start(Request("resnet-small", "pets", "out", v1::STRATEGY_SCRATCH, 50));
  ASSERT_TRUE(job.ok()) << job.status();
  // Wait for the first checkpoint, then cancel.
  const absl::Time deadline = absl::Now() + absl::Minutes(3);
  while (GetJob(job->id()).latest_version() < 1 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  grpc::ClientContext ctx;
  v1::CancelJobRequest cr;
  cr.set_id(job->id());
  Job resp;
  ASSERT_TRUE(jobs_->CancelJob(&ctx, cr, &resp).ok());
  Job end = WaitForState(job->id(), {v1::JOB_STATE_CANCELLED, v1::JOB_STATE_SUCCEEDED,
                                     v1::JOB_STATE_FAILED}, absl::Seconds(60));
  EXPECT_EQ(end.state(), v1::JOB_STATE_CANCELLED) << end.error();
  EXPECT_LT(end.epoch(), 50);
  EXPECT_GE(end.latest_version(), 1);
  auto model = client_->GetModel("out", end.latest_version());
  EXPECT_TRUE(model.ok()) << model.status();
  grpc::ClientContext again;
  EXPECT_EQ(jobs_->CancelJob(&again, cr, &resp).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

// A model that passes the upload check (eval mode) but produces NaN while
// training: the job must fail with a clear error and the server carry on.
TEST_F(FineTuneE2E, ADivergingJobFailsClearlyAndTheServerCarriesOn) {
  UploadSubset("pets", {0, 1}, 40);
  const std::string script = files_.File("nan_model.py");
  const std::string model = files_.File("nan_model.pt");
  testing::WriteBinaryFile(script,
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
  ASSERT_EQ(std::system(absl::StrCat(KAIZEN_PYTHON, " ", script, " ", model).c_str()), 0);
  v1::UploadModelHeader h;
  h.set_name("nan-model");
  for (int d : {1, 28, 28}) h.add_input_shape(d);
  ASSERT_TRUE(client_->UploadModel(h, model).ok());
  auto job = Start(Request("nan-model", "pets", "bad", v1::STRATEGY_FULL, 3));
  ASSERT_TRUE(job.ok()) << job.status();
  Job end = WaitForState(job->id(), {v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED});
  EXPECT_EQ(end.state(), v1::JOB_STATE_FAILED);
  EXPECT_NE(end.error().find("NaN"), std::string::npos) << end.error();
  auto good = Start(Request("cnn-small", "pets", "good", v1::STRATEGY_SCRATCH, 1));
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(WaitForState(good->id(), {v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED}).state(),
            v1::JOB_STATE_SUCCEEDED);
}

TEST_F(FineTuneE2E, DatasetsAndModelsInUseCannotBeDeleted) {
  UploadSubset("pets", {0, 1}, 200);
  auto job = Start(Request("resnet-small", "pets", "out", v1::STRATEGY_SCRATCH, 50));
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(client_->DeleteDataset("pets").code(), absl::StatusCode::kFailedPrecondition);
  grpc::ClientContext ctx;
  v1::CancelJobRequest cr;
  cr.set_id(job->id());
  Job resp;
  ASSERT_TRUE(jobs_->CancelJob(&ctx, cr, &resp).ok());
  WaitForState(job->id(), {v1::JOB_STATE_CANCELLED});
  EXPECT_TRUE(client_->DeleteDataset("pets").ok());
}

// A checkpoint downloaded from the service loads in Debian's python3-torch on
// its own and gives the same logits as LibTorch on the same input.
TEST_F(FineTuneE2E, DownloadedCheckpointMatchesInPython) {
  UploadSubset("pets", {0, 1, 2}, 30);
  auto job = Start(Request("resnet-small", "pets", "out", v1::STRATEGY_SCRATCH, 1));
  ASSERT_TRUE(job.ok());
  ASSERT_EQ(WaitForState(job->id(), {v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED}).state(),
            v1::JOB_STATE_SUCCEEDED);
  const std::string file = files_.File("out.pt");
  ASSERT_TRUE(client_->DownloadModel("out", 0, file).ok());
  torch::jit::Module m = torch::jit::load(file);
  m.eval();
  torch::manual_seed(0);
  torch::Tensor x = torch::linspace(-1, 1, 2 * 28 * 28).reshape({2, 1, 28, 28});
  torch::Tensor cpp = m.forward({x}).toTensor();
  const std::string script = files_.File("check.py");
  testing::WriteBinaryFile(script,
                           "import sys, torch\n"
                           "extra = {'kaizen.json': ''}\n"
                           "m = torch.jit.load(sys.argv[1], _extra_files=extra)\n"
                           "m.eval()\n"
                           "assert 'class_names' in extra['kaizen.json'].decode()\n"
                           "x = torch.linspace(-1, 1, 2 * 28 * 28).reshape(2, 1, 28, 28)\n"
                           "with torch.no_grad():\n"
                           "    y = m(x)\n"
                           "print(' '.join('%.9g' % v for v in y.flatten().tolist()))\n");
  const std::string cmd = absl::StrCat(KAIZEN_PYTHON, " ", script, " ", file);
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof(buf), p)) out.append(buf, n);
  ASSERT_EQ(pclose(p), 0) << out;
  std::vector<std::string> values = absl::StrSplit(out, ' ', absl::SkipWhitespace());
  ASSERT_EQ(static_cast<int64_t>(values.size()), cpp.numel());
  auto flat = cpp.flatten();
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_NEAR(std::stod(values[i]), flat[static_cast<int64_t>(i)].item<double>(), 1e-5) << i;
  }
}

// kill -9 while a job runs: after a restart the job is requeued, resumes from
// its last checkpoint and finishes; it never runs twice at once.
TEST_F(FineTuneE2E, KilledServerResumesTheJobFromItsCheckpoint) {
  server_.reset();
  testing::TempDir dir;
  auto spawn = [&](int port) {
    pid_t pid = fork();
    if (pid == 0) {
      const std::string bin = absl::StrCat(KAIZEN_BINARY_DIR, "/kaizen-server");
      const std::string a1 = absl::StrCat("--data_dir=", dir.path());
      const std::string a2 = absl::StrCat("--grpc_port=", port);
      const std::string log = dir.File("server.log");
      freopen(log.c_str(), "a", stderr);
      execl(bin.c_str(), bin.c_str(), a1.c_str(), a2.c_str(), "--metrics_port=-1", "--host=127.0.0.1",
            "--threads=2", static_cast<char*>(nullptr));
      _exit(127);
    }
    return pid;
  };
  auto wait_ready = [&](int port) {
    Connect(absl::StrCat("127.0.0.1:", port));
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (absl::Now() < deadline) {
      if (client_->ListDatasets().ok()) return true;
      absl::SleepFor(absl::Milliseconds(100));
    }
    return false;
  };
  const int port = 20000 + static_cast<int>(getpid() % 20000);
  pid_t pid = spawn(port);
  ASSERT_TRUE(wait_ready(port));
  UploadSubset("pets", {0, 1}, 200);
  auto job = Start(Request("resnet-small", "pets", "out", v1::STRATEGY_SCRATCH, 8));
  ASSERT_TRUE(job.ok()) << job.status();
  const absl::Time deadline = absl::Now() + absl::Minutes(3);
  Job seen;
  while (absl::Now() < deadline) {
    seen = GetJob(job->id());
    if (seen.latest_version() >= 2) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_GE(seen.latest_version(), 2);
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  waitpid(pid, nullptr, 0);

  pid = spawn(port);
  ASSERT_TRUE(wait_ready(port));
  Job end = WaitForState(job->id(), {v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED});
  const std::vector<JobEvent> events = Watch(job->id());
  kill(pid, SIGTERM);
  waitpid(pid, nullptr, 0);
  ASSERT_EQ(end.state(), v1::JOB_STATE_SUCCEEDED) << end.error();
  EXPECT_EQ(end.attempts(), 2);
  EXPECT_EQ(end.epoch(), 8);
  // Each epoch is reported once in the history: the resumed run continued
  // after the last checkpoint instead of starting over.
  std::vector<int> epochs;
  for (const auto& m : end.history()) epochs.push_back(m.epoch());
  EXPECT_EQ(epochs, (std::vector<int>{1, 2, 3, 4, 5, 6, 7, 8}));
  bool resumed = false;
  for (const auto& e : events) {
    resumed |= e.message().find("resuming from checkpoint") != std::string::npos;
  }
  EXPECT_TRUE(resumed);
}

}  // namespace
}  // namespace kaizen
