// Soak: a real kaizen-server process takes a mix of good and hostile dataset
// and model uploads from several clients at once, while a fine-tuning job
// trains and a client calls Predict in a loop. Every good upload must
// succeed, every hostile one must be refused with INVALID_ARGUMENT or
// RESOURCE_EXHAUSTED, the job must finish, no Predict may fail, nothing
// accepted may be lost, and the server's peak RSS must stay under a bound.
// KAIZEN_SOAK_SECONDS sets the length (default 20, a smoke run for CTest;
// scripts/soak.sh runs it for 10 minutes).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "client/lib/kaizen_client.h"
#include "gmock/gmock.h"
#include "server/common/atomic_file.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/python.h"
#include "tests/test_util/server_process.h"
#include "tests/test_util/temp_dir.h"
#include "tests/test_util/wait.h"

namespace kaizen {
namespace {

using test_util::ArchiveEntry;
using test_util::ArchiveKind;

// The server's resident set must stay under this (it holds LibTorch, one
// small training job and one small served model; inspections of uploaded
// models happen in their own processes).
constexpr int64_t kPeakRssBoundMb = 1024;

int64_t StatusField(pid_t pid, const std::string& field) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) != 0) continue;
    int64_t kb = 0;
    std::string digits;
    for (char c : line) {
      if (c >= '0' && c <= '9') digits.push_back(c);
    }
    return absl::SimpleAtoi(digits, &kb) ? kb / 1024 : -1;
  }
  return -1;
}

std::vector<ArchiveEntry> Folder(int per_class, uint32_t seed) {
  std::vector<ArchiveEntry> entries;
  for (int i = 0; i < per_class; ++i) {
    entries.push_back(
        {absl::StrCat("cats/", i, ".png"), test_util::EncodePng(28, 28, 1, seed + i)});
    entries.push_back(
        {absl::StrCat("dogs/", i, ".png"), test_util::EncodePng(28, 28, 1, seed + 1000 + i)});
  }
  return entries;
}

class SoakE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    const absl::StatusOr<std::string> written =
        test_util::RunPythonFixture("hostile_models.py", {files_.path(), data_.File("kaizen.db")});
    ASSERT_TRUE(written.ok()) << written.status();
    port_ = test_util::FreeLoopbackPort();
    server_ = std::make_unique<test_util::ServerProcess>(
        KAIZEN_BINARY_DIR, data_.path(), port_,
        std::vector<std::string>{"--max_batch_size=4", "--model_inspect_cpu_seconds=5"});
    client_ = NewClient();
    ASSERT_TRUE(test_util::WaitUntil([&] { return client_->ListModels().ok(); }));
  }
  std::unique_ptr<client::KaizenClient> NewClient() {
    return std::make_unique<client::KaizenClient>(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_), grpc::InsecureChannelCredentials()));
  }

  std::string Write(const std::string& name, const std::string& bytes) {
    test_util::WriteBinaryFile(files_.File(name), bytes);
    return files_.File(name);
  }

  absl::StatusOr<v1::Dataset> UploadFolder(client::KaizenClient* c, const std::string& name,
                                           const std::string& archive) {
    v1::UploadDatasetHeader h;
    h.set_name(name);
    h.set_format(v1::DATASET_FORMAT_IMAGE_FOLDER);
    return c->UploadDataset(h, {archive});
  }

  absl::StatusOr<v1::Model> UploadModel(client::KaizenClient* c, const std::string& name,
                                        const std::string& file) {
    v1::UploadModelHeader h;
    h.set_name(name);
    for (int64_t d : {1, 8, 8}) h.add_input_shape(d);
    return c->UploadModel(h, files_.File(file));
  }

  // Adds a failure unless `s` is a refusal the API promises for bad input.
  static void ExpectRefused(const absl::Status& s, const std::string& what) {
    EXPECT_TRUE(absl::IsInvalidArgument(s) || absl::IsResourceExhausted(s))
        << what << " was not refused properly: " << s;
  }

  test_util::TempDir data_;
  test_util::TempDir files_;
  int port_ = 0;
  std::unique_ptr<test_util::ServerProcess> server_;
  std::unique_ptr<client::KaizenClient> client_;
};

TEST_F(SoakE2E, HostileAndGoodTrafficWithTrainingAndPredict) {
  const char* env = std::getenv("KAIZEN_SOAK_SECONDS");
  const absl::Duration length = absl::Seconds(env != nullptr ? std::atoi(env) : 20);

  // A model to serve, then a job that trains during the whole soak.
  ASSERT_TRUE(
      UploadFolder(client_.get(), "base",
                   Write("base.tar", test_util::MakeArchive(Folder(30, 1), ArchiveKind::kTar)))
          .ok());
  v1::StartFineTuneRequest r;
  r.set_strategy(v1::STRATEGY_SCRATCH);
  r.set_base_model("cnn-small");
  r.set_dataset("base");
  r.set_output_model("served");
  r.mutable_hyperparameters()->set_epochs(1);
  auto first = client_->StartFineTune(r);
  ASSERT_TRUE(first.ok()) << first.status();
  r.set_output_model("trained");
  r.mutable_hyperparameters()->set_epochs(1000);  // cancelled at the end
  auto long_job = client_->StartFineTune(r);
  ASSERT_TRUE(long_job.ok()) << long_job.status();

  const std::string good_tar =
      Write("good.tar", test_util::MakeArchive(Folder(5, 7), ArchiveKind::kTar));
  std::string truncated = test_util::MakeArchive(Folder(5, 9), ArchiveKind::kTarGz);
  truncated.resize(truncated.size() / 2);
  const std::vector<std::string> hostile_datasets = {
      Write("truncated.tgz", truncated),
      Write("traversal.tar",
            test_util::MakeArchive({{"../../evil/a.png", test_util::EncodePng(8, 8, 1, 1)}},
                                   ArchiveKind::kTar)),
      Write("not-images.tar",
            test_util::MakeArchive({{"a/x.png", "not a png"}, {"b/y.png", "nope"}},
                                   ArchiveKind::kTar)),
  };
  const std::vector<std::string> hostile_models = {"from_file.pt", "deep_pickle.pt", "zip_bomb.pt",
                                                   "memory_bomb.pt", "endless.pt"};

  std::atomic<bool> stop{false};
  std::atomic<int> good_datasets{0}, good_models{0}, refused{0}, predictions{0};
  absl::Mutex mu;
  std::vector<std::string> accepted_datasets, accepted_models;
  std::vector<std::thread> threads;
  threads.emplace_back([&] {
    auto c = NewClient();
    for (int i = 0; !stop; ++i) {
      const std::string name = absl::StrCat("good-", i);
      absl::StatusOr<v1::Dataset> d = UploadFolder(c.get(), name, good_tar);
      EXPECT_TRUE(d.ok()) << d.status();
      if (d.ok()) {
        ++good_datasets;
        absl::MutexLock l(&mu);
        accepted_datasets.push_back(name);
      }
      const std::string& bad = hostile_datasets[i % hostile_datasets.size()];
      ExpectRefused(UploadFolder(c.get(), absl::StrCat("bad-", i), bad).status(), bad);
      ++refused;
    }
  });
  threads.emplace_back([&] {
    auto c = NewClient();
    for (int i = 0; !stop; ++i) {
      const std::string name = absl::StrCat("model-", i);
      absl::StatusOr<v1::Model> m = UploadModel(c.get(), name, "good.pt");
      EXPECT_TRUE(m.ok()) << m.status();
      if (m.ok()) {
        ++good_models;
        absl::MutexLock l(&mu);
        accepted_models.push_back(name);
      }
      const std::string& bad = hostile_models[i % hostile_models.size()];
      ExpectRefused(UploadModel(c.get(), absl::StrCat("hostile-", i), bad).status(), bad);
      ++refused;
    }
  });
  threads.emplace_back([&] {
    auto c = NewClient();
    // Predict once the first job's model exists.
    while (!stop && !c->GetModel("served").ok()) absl::SleepFor(absl::Milliseconds(200));
    while (!stop) {
      v1::PredictRequest p;
      p.set_model("served");
      p.add_inputs()->set_encoded_image(test_util::EncodePng(28, 28, 1, predictions.load()));
      absl::StatusOr<v1::PredictResponse> out = c->Predict(p, absl::Seconds(30));
      EXPECT_TRUE(out.ok()) << out.status();
      ++predictions;
    }
  });
  int64_t peak_rss = 0;
  const absl::Time end = absl::Now() + length;
  while (absl::Now() < end) {
    peak_rss = std::max(peak_rss, StatusField(server_->pid(), "VmRSS"));
    absl::SleepFor(absl::Milliseconds(200));
  }
  stop = true;
  for (std::thread& t : threads) t.join();
  peak_rss = std::max(peak_rss, StatusField(server_->pid(), "VmHWM"));

  // Nothing accepted is lost; the server still answers; the jobs ran.
  for (const std::string& d : accepted_datasets) EXPECT_TRUE(client_->GetDataset(d).ok()) << d;
  for (const std::string& m : accepted_models) EXPECT_TRUE(client_->GetModel(m).ok()) << m;
  auto job = client_->GetJob(first->id());
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state(), v1::JOB_STATE_SUCCEEDED) << job->error();
  auto running = client_->GetJob(long_job->id());
  ASSERT_TRUE(running.ok());
  EXPECT_EQ(running->state(), v1::JOB_STATE_RUNNING);
  EXPECT_GT(running->step(), 0);
  EXPECT_GT(predictions.load(), 0);
  EXPECT_GT(good_datasets.load(), 0);
  EXPECT_GT(good_models.load(), 0);
  EXPECT_LT(peak_rss, kPeakRssBoundMb);
  std::printf(
      "soak: %.0f s; %d good dataset and %d good model uploads accepted, %d hostile refused, "
      "%d predictions; server peak RSS %lld MiB (bound %lld)\n",
      absl::ToDoubleSeconds(length), good_datasets.load(), good_models.load(), refused.load(),
      predictions.load(), static_cast<long long>(peak_rss),
      static_cast<long long>(kPeakRssBoundMb));
}

}  // namespace
}  // namespace kaizen
