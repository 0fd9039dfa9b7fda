// End-to-end tests of what the README promises about fine-tuning jobs beyond
// their training: checkpoint retention, watchers that fall behind, SIGTERM
// while a job runs, models in use, and several workers. Real jobs on
// Fashion-MNIST subsets through a real server on a loopback port (in-process,
// or a kaizen-server process for SIGTERM) with its real SQLite catalogue.
#include <grpcpp/create_channel.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <iostream>
#include <optional>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/lib/kaizen_client.h"
#include "google/protobuf/util/time_util.h"
#include "kaizen/v1/finetune_service.grpc.pb.h"
#include "server/api/server.h"
#include "server/common/job_state.h"
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

// Rows of the catalogue, read with SQLite itself rather than through the
// server: what a restart would find.
class Catalogue {
 public:
  explicit Catalogue(const std::string& data_dir) {
    if (sqlite3_open_v2((data_dir + "/kaizen.db").c_str(), &db_, SQLITE_OPEN_READONLY, nullptr) !=
        SQLITE_OK) {
      ADD_FAILURE() << "cannot open " << data_dir << "/kaizen.db: " << sqlite3_errmsg(db_);
    }
  }
  ~Catalogue() { sqlite3_close(db_); }

  // The versions of model `name` that have a row, ascending.
  std::vector<int64_t> ModelVersions(const std::string& name) {
    std::vector<int64_t> out;
    Query("SELECT version FROM models WHERE name = ?1 ORDER BY version", name,
          [&](sqlite3_stmt* s) { out.push_back(sqlite3_column_int64(s, 0)); });
    return out;
  }

  // The stored row of job `id` (its state column and its proto).
  std::optional<std::pair<int, Job>> JobRow(const std::string& id) {
    std::optional<std::pair<int, Job>> out;
    Query("SELECT state, proto FROM jobs WHERE id = ?1", id, [&](sqlite3_stmt* s) {
      Job job;
      const void* blob = sqlite3_column_blob(s, 1);
      EXPECT_TRUE(job.ParseFromArray(blob, sqlite3_column_bytes(s, 1)));
      out.emplace(sqlite3_column_int(s, 0), job);
    });
    return out;
  }

 private:
  void Query(const char* sql, const std::string& arg,
             const std::function<void(sqlite3_stmt*)>& row) {
    sqlite3_stmt* s = nullptr;
    ASSERT_EQ(sqlite3_prepare_v2(db_, sql, -1, &s, nullptr), SQLITE_OK) << sqlite3_errmsg(db_);
    sqlite3_bind_text(s, 1, arg.c_str(), -1, SQLITE_TRANSIENT);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) row(s);
    EXPECT_EQ(rc, SQLITE_DONE) << sqlite3_errmsg(db_);
    sqlite3_finalize(s);
  }

  sqlite3* db_ = nullptr;
};

// The versions that have a file (models/NAME/vV-HEX.pt) and its resume state
// (.pt.resume) on disk, ascending.
std::vector<int64_t> VersionFilesOnDisk(const std::string& data_dir, const std::string& name) {
  std::set<int64_t> pt, resume;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(data_dir + "/models/" + name, ec)) {
    const std::string file = entry.path().filename().string();
    int64_t v = 0;
    if (file.empty() || file[0] != 'v' ||
        !absl::SimpleAtoi(file.substr(1, file.find('-') - 1), &v)) {
      ADD_FAILURE() << "unexpected file " << file;
      continue;
    }
    (absl::EndsWith(file, ".pt.resume") ? resume : pt).insert(v);
  }
  EXPECT_EQ(pt, resume) << "every version file has its resume state beside it";
  return std::vector<int64_t>(pt.begin(), pt.end());
}

class JobPromisesE2E : public test_util::JobServerTest {
 protected:
  std::string Target() const { return absl::StrCat("127.0.0.1:", s_.server->grpc_port()); }

  // Collects every event of a job's WatchJob stream, through `stub`, until it
  // ends.
  using JobServerTest::Watch;
  static std::vector<JobEvent> Watch(v1::FineTuneService::Stub* stub, const std::string& id,
                                     int64_t after = 0, grpc::Status* status = nullptr) {
    return test_util::WatchAll(*stub, id, after, status);
  }

  static bool HasMessage(const std::vector<JobEvent>& events, const std::string& text) {
    return std::any_of(events.begin(), events.end(), [&](const JobEvent& e) {
      return e.event_case() == JobEvent::kMessage && absl::StrContains(e.message(), text);
    });
  }

  static int64_t Millis(const google::protobuf::Timestamp& t) {
    return google::protobuf::util::TimeUtil::TimestampToMilliseconds(t);
  }
};

// keep_checkpoints=2 on a run whose best version is its first: the two newest
// versions and the best stay, in the catalogue (GetModel and the SQLite rows)
// and on disk (model file and resume state); every other version is gone.
TEST_F(JobPromisesE2E, RetentionKeepsTheNewestVersionsAndTheBestOnDiskAndInTheCatalogue) {
  StartServer();
  UploadSubset("pair", {1, 9}, 60);
  // The validation set has the labels swapped, so the better the model
  // learns the training set, the worse its validation loss: the best version
  // is an early one, which pruning by age alone would delete.
  UploadSubset("pair-swapped", {9, 1}, 20, 0, "t10k", {"class1", "class9"});
  constexpr int kEpochs = 6, kKeep = 2;
  auto r = Request("cnn-small", "pair", "out", v1::STRATEGY_SCRATCH, kEpochs);
  r.set_keep_checkpoints(kKeep);
  r.mutable_hyperparameters()->set_batch_size(16);
  r.mutable_hyperparameters()->mutable_validation()->set_dataset("pair-swapped");
  r.mutable_hyperparameters()->mutable_early_stopping()->set_metric("val_loss");
  const Job job = Start(r);
  const Job end = WaitForSuccess(job.id());
  ASSERT_EQ(end.history_size(), kEpochs);
  // One version per epoch, the last one the latest.
  ASSERT_EQ(end.latest_version(), kEpochs);
  const int64_t best = end.best_version();
  std::cout << "best version " << best << " of " << end.latest_version() << "\n";
  ASSERT_GE(best, 1);
  ASSERT_LE(best, kEpochs - kKeep) << "the run must make its best version old enough to be pruned "
                                      "by age; the test no longer checks what it says";
  std::vector<int64_t> expected = {best};
  for (int64_t v = kEpochs - kKeep + 1; v <= kEpochs; ++v) expected.push_back(v);

  absl::StatusOr<v1::Model> model = s_.client->GetModel("out");
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(std::vector<int64_t>(model->versions().begin(), model->versions().end()), expected);
  EXPECT_EQ(model->latest_version(), kEpochs);
  EXPECT_EQ(model->version(), kEpochs);
  for (int64_t v = 1; v <= kEpochs; ++v) {
    const bool kept = std::find(expected.begin(), expected.end(), v) != expected.end();
    absl::StatusOr<v1::Model> version = s_.client->GetModel("out", v);
    EXPECT_EQ(version.ok(), kept) << "version " << v << ": " << version.status();
    if (!kept) EXPECT_EQ(version.status().code(), absl::StatusCode::kNotFound) << version.status();
  }
  // The best version is still usable: it downloads and is the job's.
  absl::StatusOr<v1::Model> best_model =
      s_.client->DownloadModel("out", best, files_.File("best.pt"));
  ASSERT_TRUE(best_model.ok()) << best_model.status();
  EXPECT_EQ(best_model->job_id(), job.id());
  EXPECT_EQ(best_model->metrics().at("epoch"), static_cast<double>(best));

  Catalogue catalogue(data_.path());
  EXPECT_EQ(catalogue.ModelVersions("out"), expected);
  EXPECT_EQ(VersionFilesOnDisk(data_.path(), "out"), expected);

  // The same holds after a restart (nothing is pruned or swept differently).
  StartServer();
  model = s_.client->GetModel("out");
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(std::vector<int64_t>(model->versions().begin(), model->versions().end()), expected);
  EXPECT_EQ(VersionFilesOnDisk(data_.path(), "out"), expected);
}

// A watcher that stops reading falls behind; past the limit its stream ends
// with RESOURCE_EXHAUSTED naming the sequence to resume after, the job going
// on without waiting for it, and a watch resumed from the last event it got
// receives the rest to the end. The limit is lowered from 10,000 to 50
// (KaizenServer::Options::max_watcher_backlog, the same code path) so that a
// short job makes enough events.
TEST_F(JobPromisesE2E, AWatcherFarBehindEndsWithResourceExhaustedAndResumes) {
  constexpr size_t kLimit = 50;
  StartServer([](api::KaizenServer::Options& o) { o.max_watcher_backlog = kLimit; });
  // Ten classes with long names make every epoch summary over a kilobyte, so
  // that what gRPC buffers for the stalled watcher is a small part of it.
  UploadSubset("ten", {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 10, 0, "train",
               test_util::LongClassNames(10));
  constexpr int kEpochs = 50;
  auto r = Request("cnn-small", "ten", "out", v1::STRATEGY_SCRATCH, kEpochs);
  r.mutable_hyperparameters()->set_batch_size(40);
  const Job job = Start(r);

  // The stalled watcher has a channel of its own whose flow-control window
  // stays small: it opens the stream and reads nothing.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 4096);
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto stalled_stub = v1::FineTuneService::NewStub(
      grpc::CreateCustomChannel(Target(), grpc::InsecureChannelCredentials(), args));
  grpc::ClientContext stalled_ctx;
  stalled_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(5));
  v1::WatchJobRequest wr;
  wr.set_id(job.id());
  auto stalled = stalled_stub->WatchJob(&stalled_ctx, wr);

  // The job does not wait for it.
  const Job end = WaitForSuccess(job.id());
  EXPECT_EQ(end.history_size(), kEpochs);
  const int64_t last = end.last_sequence();
  std::cout << "the job made " << last << " events\n";
  // Two events an epoch (its summary and its checkpoint) at least.
  ASSERT_GT(last, static_cast<int64_t>(2 * kLimit));

  // The stalled watcher now reads what it was sent, then the status.
  std::vector<JobEvent> got;
  JobEvent e;
  while (stalled->Read(&e)) got.push_back(e);
  const grpc::Status st = stalled->Finish();
  std::cout << "the stalled watcher got " << got.size() << " events before its end\n";
  ASSERT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  ASSERT_FALSE(got.empty());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i].sequence(), static_cast<int64_t>(i + 1));
  }
  const int64_t seen = got.back().sequence();
  EXPECT_NE(st.error_message().find(absl::StrCat("fell more than ", kLimit, " events behind")),
            std::string::npos)
      << st.error_message();
  EXPECT_NE(st.error_message().find(absl::StrCat("after_sequence=", seen)), std::string::npos)
      << st.error_message();
  // Resuming replays more than the limit: a replay is what the watcher asked
  // for, not lag, and arrives whole.
  ASSERT_GT(last - seen, static_cast<int64_t>(kLimit));
  grpc::Status resumed_status;
  const std::vector<JobEvent> rest = Watch(stalled_stub.get(), job.id(), seen, &resumed_status);
  EXPECT_TRUE(resumed_status.ok()) << resumed_status.error_message();
  ASSERT_EQ(static_cast<int64_t>(rest.size()), last - seen);
  for (size_t i = 0; i < rest.size(); ++i) {
    ASSERT_EQ(rest[i].sequence(), seen + 1 + static_cast<int64_t>(i));
  }
  EXPECT_EQ(rest.back().state(), v1::JOB_STATE_SUCCEEDED);
}

// SIGTERM to a kaizen-server process while a job runs: the job writes a
// checkpoint, its catalogue row is back to QUEUED (read from SQLite while no
// server runs), and at the next start it resumes there and ends with the
// per-epoch losses of the same request run without interruption. A graceful
// shutdown does not use up one of the job's attempts.
TEST_F(JobPromisesE2E, SigtermCheckpointsARunningJobWhichResumesWithTheSameLosses) {
  const int port = test_util::FreeLoopbackPort();
  // No drain, so that the job is stopped rather than given time to finish.
  const std::vector<std::string> flags = {"--drain_seconds=0"};
  auto server =
      std::make_unique<test_util::ServerProcess>(KAIZEN_BINARY_DIR, data_.path(), port, flags);
  ASSERT_TRUE(Connect(port));
  UploadSubset("pets", {0, 1}, 60);
  // 96 images to train on in batches of 16: 3 epochs of 6 steps.
  auto r = Request("resnet-small", "pets", "straight", v1::STRATEGY_SCRATCH, 3);
  r.mutable_hyperparameters()->set_batch_size(16);
  const Job uninterrupted = WaitForSuccess(Start(r).id());
  ASSERT_EQ(uninterrupted.total_steps(), 18);

  r.set_output_model("stopped");
  const std::string id = Start(r).id();
  {
    // Until the job reports its first step.
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(4));
    v1::WatchJobRequest wr;
    wr.set_id(id);
    auto reader = jobs_->WatchJob(&ctx, wr);
    JobEvent e;
    bool stepped = false;
    while (!stepped && reader->Read(&e)) stepped = e.has_progress();
    ASSERT_TRUE(stepped) << "job " << id << " reported no step";
    const int status = server->Kill(SIGTERM);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "wait status " << status;
    ctx.TryCancel();
    reader->Finish();
  }
  server.reset();
  {
    Catalogue catalogue(data_.path());
    const auto row = catalogue.JobRow(id);
    ASSERT_TRUE(row.has_value());
    EXPECT_EQ(row->first, v1::JOB_STATE_QUEUED);
    const Job& stored = row->second;
    EXPECT_EQ(stored.state(), v1::JOB_STATE_QUEUED);
    EXPECT_EQ(stored.attempts(), 0) << "a graceful shutdown is not an attempt";
    ASSERT_GE(stored.latest_version(), 1) << "the shutdown writes a checkpoint";
    EXPECT_GT(stored.step(), 0);
    ASSERT_LT(stored.step(), stored.total_steps()) << "the job ended before SIGTERM stopped it";
    std::cout << "stopped after step " << stored.step() << "/" << stored.total_steps()
              << ", checkpoint version " << stored.latest_version() << "\n";
    EXPECT_EQ(catalogue.ModelVersions("stopped").back(), stored.latest_version());
  }

  server = std::make_unique<test_util::ServerProcess>(KAIZEN_BINARY_DIR, data_.path(), port, flags);
  ASSERT_TRUE(Connect(port));
  const Job end = WaitForSuccess(id);
  const std::vector<JobEvent> events = Watch(id);
  server.reset();
  EXPECT_EQ(end.attempts(), 1);
  ExpectSameHistory(uninterrupted, end);
  EXPECT_EQ(StatesOf(events), (std::vector<v1::JobState>{
                                  v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING, v1::JOB_STATE_QUEUED,
                                  v1::JOB_STATE_RUNNING, v1::JOB_STATE_SUCCEEDED}));
  EXPECT_TRUE(HasMessage(events,
                         "the server is shutting down; the job will resume from "
                         "checkpoint version"));
  EXPECT_TRUE(HasMessage(events, "resuming from checkpoint version"));
}

// A model that a queued or running job uses, as its base model or as its
// output, cannot be deleted (FAILED_PRECONDITION, and it stays whole); once
// the job has ended it can.
TEST_F(JobPromisesE2E, ModelsThatAQueuedOrRunningJobUsesCannotBeDeleted) {
  StartServer();
  UploadSubset("pets", {0, 1}, 200);
  const Job pretrain = Start(Request("cnn-small", "pets", "base", v1::STRATEGY_SCRATCH, 1));
  ASSERT_EQ(WaitForSuccess(pretrain.id()).state(), v1::JOB_STATE_SUCCEEDED);

  auto expect_refused = [&](const std::string& model, const std::string& why) {
    const absl::Status st = s_.client->DeleteModel(model);
    EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << why << ": " << st;
    EXPECT_NE(st.message().find("used by a queued or running job"), absl::string_view::npos) << st;
  };
  // One worker: `a` runs (from a built-in base) while `b`, on "base", waits.
  const Job a = Start(Request("resnet-small", "pets", "a-out", v1::STRATEGY_SCRATCH, 50));
  WaitForState(a.id(), {v1::JOB_STATE_RUNNING});
  const Job b = Start(Request("base", "pets", "b-out", v1::STRATEGY_FINE_TUNE, 50));
  ASSERT_EQ(GetJob(b.id()).state(), v1::JOB_STATE_QUEUED);
  expect_refused("base", "the base model of a queued job");
  EXPECT_EQ(s_.client->DeleteModel("base", 1).code(), absl::StatusCode::kFailedPrecondition);
  expect_refused("b-out", "the output of a queued job");
  expect_refused("a-out", "the output of a running job");
  ASSERT_TRUE(s_.client->GetModel("base", 1).ok());
  EXPECT_EQ(VersionFilesOnDisk(data_.path(), "base"), std::vector<int64_t>{1});

  // Cancelled after a step, so that each output has a version to delete.
  auto cancel_after_a_step = [&](const std::string& id) {
    ASSERT_TRUE(test_util::WaitUntil([&] { return GetJob(id).step() > 0; }, absl::Minutes(3)));
    ASSERT_TRUE(s_.client->CancelJob(id).ok());
    const Job end = WaitForState(id, {v1::JOB_STATE_CANCELLED});
    EXPECT_GE(end.latest_version(), 1);
  };
  cancel_after_a_step(a.id());
  EXPECT_TRUE(s_.client->DeleteModel("a-out").ok());
  WaitForState(b.id(), {v1::JOB_STATE_RUNNING});
  expect_refused("base", "the base model of a running job");
  expect_refused("b-out", "the output of a running job");

  cancel_after_a_step(b.id());
  EXPECT_TRUE(s_.client->DeleteModel("base").ok());
  EXPECT_TRUE(s_.client->DeleteModel("b-out").ok());
  for (const std::string& name : {"base", "a-out", "b-out"}) {
    EXPECT_EQ(s_.client->GetModel(name).status().code(), absl::StatusCode::kNotFound) << name;
    EXPECT_FALSE(std::filesystem::exists(data_.path() + "/models/" + name)) << name;
    EXPECT_TRUE(Catalogue(data_.path()).ModelVersions(name).empty()) << name;
  }
}

// With two workers, two jobs run at the same time (both seen RUNNING at once)
// and each ends SUCCEEDED with its own output model, classes and history.
TEST_F(JobPromisesE2E, TwoWorkersRunTwoJobsAtOnceAndEachFinishes) {
  StartServer([](api::KaizenServer::Options& o) { o.workers = 2; });
  UploadSubset("two", {0, 1}, 60);
  UploadSubset("three", {2, 3, 4}, 40);
  constexpr int kEpochs = 4;
  auto ra = Request("resnet-small", "two", "two-out", v1::STRATEGY_SCRATCH, kEpochs);
  auto rb = Request("resnet-small", "three", "three-out", v1::STRATEGY_SCRATCH, kEpochs);
  ra.mutable_hyperparameters()->set_batch_size(16);
  rb.mutable_hyperparameters()->set_batch_size(16);
  const Job a = Start(ra);
  const Job b = Start(rb);
  bool both_running = false;
  ASSERT_TRUE(test_util::WaitUntil(
      [&] {
        const Job ja = GetJob(a.id()), jb = GetJob(b.id());
        both_running = ja.state() == v1::JOB_STATE_RUNNING && jb.state() == v1::JOB_STATE_RUNNING;
        // Stop waiting if either has ended: the test then fails below.
        return both_running || common::IsTerminal(ja.state()) || common::IsTerminal(jb.state());
      },
      absl::Minutes(2)));
  EXPECT_TRUE(both_running) << "the two jobs were never RUNNING at the same time";

  const Job end_a = WaitForSuccess(a.id());
  const Job end_b = WaitForSuccess(b.id());
  // Their runs overlap in the job records too.
  EXPECT_LT(Millis(end_a.start_time()), Millis(end_b.end_time()));
  EXPECT_LT(Millis(end_b.start_time()), Millis(end_a.end_time()));
  struct Expected {
    const Job& job;
    std::string model;
    std::vector<std::string> classes;
  };
  for (const Expected& x : {Expected{end_a, "two-out", {"class0", "class1"}},
                            Expected{end_b, "three-out", {"class2", "class3", "class4"}}}) {
    EXPECT_EQ(x.job.attempts(), 1);
    ASSERT_EQ(x.job.history_size(), kEpochs) << x.model;
    for (int i = 0; i < kEpochs; ++i) EXPECT_EQ(x.job.history(i).epoch(), i + 1) << x.model;
    EXPECT_EQ(x.job.latest_version(), kEpochs) << x.model;
    absl::StatusOr<v1::Model> model = s_.client->GetModel(x.model);
    ASSERT_TRUE(model.ok()) << model.status();
    EXPECT_EQ(model->job_id(), x.job.id());
    EXPECT_EQ(model->source(), v1::MODEL_SOURCE_FINE_TUNED);
    EXPECT_EQ(std::vector<std::string>(model->class_names().begin(), model->class_names().end()),
              x.classes);
    EXPECT_EQ(model->head().out_features(), static_cast<int>(x.classes.size()));
  }
}

}  // namespace
}  // namespace kaizen
