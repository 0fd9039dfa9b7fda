// The job manager's guarantees about names, references and crash windows,
// on the real stores (SQLite in a temporary directory) and real training
// runs of the smallest built-in model.
#include "server/jobs/job_manager.h"

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <future>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"
#include "server/common/sha256.h"
#include "server/models/builtin_models.h"
#include "server/store/data_dir.h"
#include "server/store/database.h"
#include "server/store/metadata_store.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::jobs {
namespace {

using kaizen::v1::Job;
using ::testing::HasSubstr;

// A replica's options for the tests of replicas on one database (one
// SQLite file; the other replica's calls are made on the store directly).
JobManager::Options ReplicaOptions(const std::string& replica) {
  JobManager::Options o;
  o.shared_database = true;
  o.replica_id = replica;
  // Long enough that no renewal comes between the steps of these runs'
  // requests and their ends.
  o.job_lease = absl::Seconds(60);
  return o;
}

// Defined with the replica tests below.
void TakeOver(store::JobStore* jobs, const std::string& id, const std::string& marker);

class JobManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(store::PrepareDataDir(dir_.path()).ok());
    auto metadata = store::MetadataStore::Open(dir_.path() + "/kaizen.db");
    ASSERT_TRUE(metadata.ok()) << metadata.status();
    metadata_ = *std::move(metadata);
    datasets_ = std::make_unique<store::DatasetStore>(store::DatasetStore::Options{dir_.path()},
                                                      metadata_.get());
    store::ModelStore::Options mo;
    mo.data_dir = dir_.path();
    models_ = std::make_unique<store::ModelStore>(mo, metadata_.get());
    auto jobs = store::JobStore::Open(metadata_->db());
    ASSERT_TRUE(jobs.ok()) << jobs.status();
    jobs_ = *std::move(jobs);
    events_ = std::make_unique<JobEventHub>(jobs_.get());
  }
  void TearDown() override {
    if (manager_) manager_->Stop();
  }

  void MakeManager(JobManager::Options o = {}) {
    manager_ =
        std::make_unique<JobManager>(o, jobs_.get(), datasets_.get(), models_.get(), events_.get());
    JobManager* m = manager_.get();
    datasets_->set_in_use_check([m](const std::string& n) { return m->DatasetInUse(n); },
                                m->references_mutex());
    models_->set_in_use_check([m](const std::string& n) { return m->ModelInUse(n); },
                              m->references_mutex());
    models_->set_output_check([m](const std::string& n) { return m->JobWritingModel(n); });
  }

  // `images` PNGs (pixels from seeds `seed`, `seed` + 1, ...), half in class
  // folder `odd`, half in `even`.
  void UploadDataset(const std::string& name, int images = 8, const std::string& odd = "cats",
                     const std::string& even = "dogs", uint32_t seed = 0) {
    std::vector<test_util::ArchiveEntry> entries;
    for (int i = 0; i < images; ++i) {
      entries.push_back({absl::StrCat(i % 2 ? odd : even, "/", i, ".png"),
                         test_util::EncodePng(16, 16, 3, seed + static_cast<uint32_t>(i))});
    }
    const std::string archive = test_util::MakeArchive(entries, test_util::ArchiveKind::kTar);
    kaizen::v1::UploadDatasetHeader h;
    h.set_name(name);
    h.set_format(kaizen::v1::DATASET_FORMAT_IMAGE_FOLDER);
    auto* part = h.add_parts();
    part->set_file_name("pets.tar");
    part->set_size_bytes(static_cast<int64_t>(archive.size()));
    auto upload = datasets_->BeginUpload(h);
    ASSERT_TRUE(upload.ok()) << upload.status();
    ASSERT_TRUE((*upload)->Append(archive).ok());
    auto dataset = (*upload)->Finish(common::Sha256Hex(archive));
    ASSERT_TRUE(dataset.ok()) << dataset.status();
  }

  static kaizen::v1::StartFineTuneRequest Request(const std::string& dataset,
                                                  const std::string& output, int epochs = 1) {
    kaizen::v1::StartFineTuneRequest r;
    r.set_strategy(kaizen::v1::STRATEGY_SCRATCH);
    r.set_base_model("cnn-small");
    r.set_dataset(dataset);
    r.set_output_model(output);
    r.mutable_hyperparameters()->set_epochs(epochs);
    r.mutable_hyperparameters()->set_batch_size(4);
    return r;
  }

  Job WaitForEnd(const std::string& id) {
    return WaitForState(id, {kaizen::v1::JOB_STATE_SUCCEEDED, kaizen::v1::JOB_STATE_FAILED,
                             kaizen::v1::JOB_STATE_CANCELLED});
  }

  Job WaitForState(const std::string& id, const std::vector<kaizen::v1::JobState>& states) {
    for (int i = 0; i < 2400; ++i) {
      absl::StatusOr<Job> job = manager_->Get(id);
      if (job.ok() && std::find(states.begin(), states.end(), job->state()) != states.end()) {
        return *job;
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    ADD_FAILURE() << "job " << id << " did not reach the state expected";
    return Job();
  }

  // The states a job went through, from its event log.
  std::vector<kaizen::v1::JobState> States(const std::string& id) {
    std::vector<kaizen::v1::JobState> out;
    auto events = jobs_->Events(id, 0);
    EXPECT_TRUE(events.ok()) << events.status();
    if (!events.ok()) return out;
    for (const kaizen::v1::JobEvent& e : *events) {
      if (e.event_case() == kaizen::v1::JobEvent::kState) out.push_back(e.state());
    }
    return out;
  }

  std::vector<std::string> Messages(const std::string& id) {
    std::vector<std::string> out;
    auto events = jobs_->Events(id, 0);
    if (!events.ok()) return out;
    for (const kaizen::v1::JobEvent& e : *events) {
      if (e.event_case() == kaizen::v1::JobEvent::kMessage) out.push_back(e.message());
    }
    return out;
  }

  // With `o` (replica hooks that read `*id`): `first` (by default a 3-epoch
  // job into "out"), then a 1-epoch one; with one worker, the second ends
  // only after the run of the first has stopped.
  void RunAJobThenAnother(const JobManager::Options& o, std::string* id,
                          const kaizen::v1::StartFineTuneRequest& first = Request("pets", "out",
                                                                                  /*epochs=*/3)) {
    MakeManager(o);
    absl::StatusOr<Job> job = manager_->Submit(first);
    ASSERT_TRUE(job.ok()) << job.status();
    *id = job->id();
    ASSERT_TRUE(manager_->Start().ok());
    absl::StatusOr<Job> next = manager_->Submit(Request("pets", "next"));
    ASSERT_TRUE(next.ok()) << next.status();
    EXPECT_EQ(WaitForEnd(next->id()).state(), kaizen::v1::JOB_STATE_SUCCEEDED);
  }

  // This replica is "b" (not started yet); a one-epoch job into "out" was
  // claimed by replica "a", whose lease ran out long ago.
  absl::StatusOr<Job> JobOfADeadReplica(JobManager::Options b = ReplicaOptions("b")) {
    MakeManager(std::move(b));
    absl::StatusOr<Job> job = manager_->Submit(Request("pets", "out"));
    if (!job.ok()) return job.status();
    const int64_t long_ago = absl::ToUnixMillis(absl::Now()) - 120000;
    absl::StatusOr<std::optional<Job>> claimed = jobs_->ClaimNext("a", long_ago, 1000);
    if (!claimed.ok()) return claimed.status();
    if (!claimed->has_value()) return absl::InternalError("replica a claimed nothing");
    return job;
  }

  // Asks `request` ("cancel" or "pause") through replica a after b took a's
  // job over mid-run (TakeOver), before a's run noticed; checks that the
  // request waits on b's lease.
  void AskThroughAReplicaThatLostTheJob(const std::string& request) {
    UploadDataset("pets");
    std::string id;
    JobManager::Options o = ReplicaOptions("a");
    o.after_step = [&](const std::string& job_id, int64_t step) {
      if (job_id != id || step != 1) return;
      TakeOver(jobs_.get(), job_id, "taken by b");
      absl::StatusOr<Job> answer =
          request == "cancel" ? manager_->Cancel(job_id) : manager_->Pause(job_id);
      ASSERT_TRUE(answer.ok()) << answer.status();
      EXPECT_EQ(answer->state(), kaizen::v1::JOB_STATE_RUNNING);
    };
    RunAJobThenAnother(o, &id);

    auto lease = *jobs_->RenewLeases("b", {id}, absl::ToUnixMillis(absl::Now()) + 120000, 60000);
    EXPECT_TRUE(lease[id].held);
    EXPECT_EQ(lease[id].request, request);
    const Job row = *jobs_->Get(id);
    EXPECT_EQ(row.device(), "taken by b");
    EXPECT_EQ(row.state(), kaizen::v1::JOB_STATE_RUNNING);
    EXPECT_THAT(
        Messages(id),
        ::testing::Contains(HasSubstr(absl::StrCat(request == "cancel" ? "cancellation" : "pause",
                                                   " requested through replica a; replica b"))));
  }

  // Job `id`'s row as replica a's run recorded it: RUNNING, with
  // `latest_version` when given.
  void RecordRunning(const std::string& id, int64_t latest_version = 0) {
    Job row = *jobs_->Get(id);
    row.set_state(kaizen::v1::JOB_STATE_RUNNING);
    if (latest_version > 0) row.set_latest_version(latest_version);
    ASSERT_TRUE(jobs_->Update(row).ok());
  }

  // A cnn-small version of "out" as job `job_id` would write it.
  kaizen::v1::Model AddOutVersion(const std::string& job_id, const std::string& description) {
    absl::StatusOr<torch::jit::Module> module =
        models::CreateBuiltinModel("cnn-small", models::BuiltinOptions{});
    EXPECT_TRUE(module.ok()) << module.status();
    kaizen::v1::Model meta;
    meta.set_job_id(job_id);
    meta.add_class_names("cats");
    meta.add_class_names("dogs");
    meta.set_description(description);
    absl::StatusOr<kaizen::v1::Model> added =
        module.ok() ? models_->AddVersion("out", *module, meta, "") : module.status();
    EXPECT_TRUE(added.ok()) << added.status();
    return added.ok() ? *added : kaizen::v1::Model();
  }

  bool NameIsHeld(const std::string& name) {
    kaizen::v1::UploadModelHeader h;
    h.set_name(name);
    h.add_parts()->set_size_bytes(10);
    auto upload = models_->BeginUpload(h);
    if (upload.ok()) return false;
    EXPECT_EQ(upload.status().code(), absl::StatusCode::kAlreadyExists) << upload.status();
    return true;
  }

  test_util::TempDir dir_;
  std::unique_ptr<store::MetadataStore> metadata_;
  std::unique_ptr<store::DatasetStore> datasets_;
  std::unique_ptr<store::ModelStore> models_;
  std::unique_ptr<store::JobStore> jobs_;
  std::unique_ptr<JobEventHub> events_;
  std::unique_ptr<JobManager> manager_;
};

TEST_F(JobManagerTest, AnUploadInProgressHoldsItsNameAgainstJobOutputs) {
  MakeManager();
  UploadDataset("pets");
  kaizen::v1::UploadModelHeader h;
  h.set_name("shared-name");
  h.add_parts()->set_size_bytes(10);
  auto upload = models_->BeginUpload(h);
  ASSERT_TRUE(upload.ok()) << upload.status();
  absl::StatusOr<Job> job = manager_->Submit(Request("pets", "shared-name"));
  ASSERT_FALSE(job.ok());
  EXPECT_EQ(job.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(job.status().message(), HasSubstr("an upload in progress"));
}

TEST_F(JobManagerTest, AJobOutputHoldsItsNameAgainstUploads) {
  MakeManager();  // not started: the job stays queued
  UploadDataset("pets");
  absl::StatusOr<Job> job = manager_->Submit(Request("pets", "shared-name"));
  ASSERT_TRUE(job.ok()) << job.status();
  kaizen::v1::UploadModelHeader h;
  h.set_name("shared-name");
  h.add_parts()->set_size_bytes(10);
  auto upload = models_->BeginUpload(h);
  ASSERT_FALSE(upload.ok());
  EXPECT_EQ(upload.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(upload.status().message(), HasSubstr(job->id()));
  // Cancelling the job frees the name.
  ASSERT_TRUE(manager_->Cancel(job->id()).ok());
  EXPECT_TRUE(models_->BeginUpload(h).ok());
}

// A job submitted through another replica (its row written straight into
// the shared table here) is not in this replica's name reservations: the
// upload is refused by the job table, when it begins and when it finishes.
TEST_F(JobManagerTest, AJobOfAnotherReplicaHoldsItsOutputNameAgainstUploads) {
  MakeManager();
  auto other_replicas_job = [&](const std::string& id, const std::string& output) {
    Job job;
    job.set_id(id);
    job.set_state(kaizen::v1::JOB_STATE_QUEUED);
    job.mutable_request()->set_output_model(output);
    return jobs_->Insert(job);
  };
  ASSERT_TRUE(other_replicas_job("ft-other", "theirs").ok());
  kaizen::v1::UploadModelHeader h;
  h.set_name("theirs");
  h.add_parts()->set_size_bytes(10);
  auto refused = models_->BeginUpload(h);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(refused.status().message(),
              HasSubstr("model \"theirs\" is being written by job ft-other"));

  h.set_name("later");
  auto upload = models_->BeginUpload(h);
  ASSERT_TRUE(upload.ok()) << upload.status();
  const std::string bytes = "0123456789";
  ASSERT_TRUE((*upload)->Append(bytes).ok());
  ASSERT_TRUE(other_replicas_job("ft-later", "later").ok());
  auto finished = (*upload)->Finish(common::Sha256Hex(bytes));
  ASSERT_FALSE(finished.ok());
  EXPECT_EQ(finished.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(finished.status().message(), HasSubstr("being written by job ft-later"));

  // Once the other replica's job has ended the name is free.
  Job ended = *jobs_->Get("ft-other");
  ended.set_state(kaizen::v1::JOB_STATE_CANCELLED);
  ASSERT_TRUE(jobs_->Update(ended).ok());
  h.set_name("theirs");
  EXPECT_TRUE(models_->BeginUpload(h).ok());
}

// A job submitted through another replica while an upload's sandboxed
// inspection ran (seconds) refuses the upload too: the job table is checked
// again once the inspection has accepted the model, and no version of the
// name is stored.
TEST_F(JobManagerTest, AJobSubmittedDuringAnUploadsInspectionRefusesTheUpload) {
  store::ModelStore::Options mo;
  mo.data_dir = dir_.path();
  int inspected = 0;
  mo.after_inspection = [&](const std::string& name) {
    ++inspected;
    Job job;
    job.set_id("ft-meanwhile");
    job.set_state(kaizen::v1::JOB_STATE_QUEUED);
    job.mutable_request()->set_output_model(name);
    ASSERT_TRUE(jobs_->Insert(job).ok());
  };
  models_ = std::make_unique<store::ModelStore>(mo, metadata_.get());
  MakeManager();
  absl::StatusOr<torch::jit::Module> module =
      models::CreateBuiltinModel("cnn-small", models::BuiltinOptions{});
  ASSERT_TRUE(module.ok()) << module.status();
  std::ostringstream saved;
  module->save(saved);
  const std::string bytes = saved.str();
  kaizen::v1::UploadModelHeader h;
  h.set_name("raced");
  h.add_parts()->set_size_bytes(static_cast<int64_t>(bytes.size()));
  for (const int64_t d : {1, 28, 28}) h.add_input_shape(d);
  auto upload = models_->BeginUpload(h);
  ASSERT_TRUE(upload.ok()) << upload.status();
  ASSERT_TRUE((*upload)->Append(bytes).ok());
  auto finished = (*upload)->Finish(common::Sha256Hex(bytes));
  ASSERT_EQ(inspected, 1) << finished.status();  // the inspection accepted it
  ASSERT_FALSE(finished.ok());
  EXPECT_EQ(finished.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(finished.status().message(), HasSubstr("being written by job ft-meanwhile"));
  EXPECT_EQ(models_->Get("raced", 0).status().code(), absl::StatusCode::kNotFound);
}

// validate_only: the same checks and resolution as a real start, and
// nothing queued, reserved or recorded.
TEST_F(JobManagerTest, AValidateOnlyRequestAnswersTheJobItWouldQueueAndQueuesNothing) {
  MakeManager();  // not started: a real job stays queued
  UploadDataset("pets", 40);
  kaizen::v1::StartFineTuneRequest preview = Request("pets", "", /*epochs=*/0);
  preview.set_strategy(kaizen::v1::STRATEGY_FINE_TUNE);
  preview.mutable_hyperparameters()->clear_batch_size();
  preview.set_validate_only(true);
  preview.set_request_id("once");
  absl::StatusOr<Job> shown = manager_->Submit(preview);
  ASSERT_TRUE(shown.ok()) << shown.status();
  EXPECT_EQ(shown->id(), "");
  EXPECT_EQ(shown->state(), kaizen::v1::JOB_STATE_UNSPECIFIED);
  EXPECT_FALSE(shown->has_create_time());
  EXPECT_GT(shown->resolved_hyperparameters().epochs(), 0);
  EXPECT_GT(shown->resolved_hyperparameters().learning_rate(), 0);
  auto listed = manager_->List({});
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->jobs_size(), 0);

  // The real job, with the same request_id, resolves the same: the preview
  // recorded neither the id nor the name.
  kaizen::v1::StartFineTuneRequest real = preview;
  real.set_validate_only(false);
  real.set_output_model("pets-model");
  absl::StatusOr<Job> queued = manager_->Submit(real);
  ASSERT_TRUE(queued.ok()) << queued.status();
  EXPECT_NE(queued->id(), "");
  // The same resolution, but for the seed each job draws when none is given.
  kaizen::v1::Hyperparameters a = queued->resolved_hyperparameters();
  kaizen::v1::Hyperparameters b = shown->resolved_hyperparameters();
  EXPECT_NE(a.seed(), 0);
  EXPECT_NE(b.seed(), 0);
  a.clear_seed();
  b.clear_seed();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(a, b)) << a.DebugString() << "\n"
                                                                        << b.DebugString();

  // Refusals are those of a real start: a taken name, a missing dataset,
  // an empty output outside a preview.
  preview.set_output_model("cnn-small");  // a built-in model's name
  EXPECT_EQ(manager_->Submit(preview).status().code(), absl::StatusCode::kAlreadyExists);
  // A name held by a queued job is found by the real start only; the
  // preview does not touch the job's hold on it.
  preview.set_output_model("pets-model");
  EXPECT_TRUE(manager_->Submit(preview).ok());
  EXPECT_TRUE(NameIsHeld("pets-model"));
  preview.set_output_model("");
  preview.set_dataset("nope");
  EXPECT_EQ(manager_->Submit(preview).status().code(), absl::StatusCode::kNotFound);
  real.set_output_model("");
  real.set_request_id("");
  EXPECT_EQ(manager_->Submit(real).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(NameIsHeld("free-name"));
}

// A job with a test dataset: refused when the test set is its training data
// or has classes the model will not know; held against deletion while the
// job lives; once training ends its final versions are evaluated on it and
// each result is stored with its version.
TEST_F(JobManagerTest, ATestDatasetIsCheckedHeldAndEvaluatesTheFinalVersions) {
  ModelEvaluator evaluator(ModelEvaluator::Options{}, models_.get(), datasets_.get());
  JobManager::Options o;
  o.evaluator = &evaluator;
  MakeManager(o);
  UploadDataset("pets", 16);
  UploadDataset("pets-test", 8, "cats", "dogs", /*seed=*/1000);  // images pets does not hold
  UploadDataset("birds", 8, "birds", "cats");
  UploadDataset("many-pets", 40, "cats", "dogs", /*seed=*/2000);
  auto request = [](const std::string& test) {
    auto r = Request("pets", "out", 2);
    r.set_test_dataset(test);
    return r;
  };
  auto same = manager_->Submit(request("pets"));
  EXPECT_EQ(same.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(same.status().message(), HasSubstr("is the job's training dataset"));
  auto missing = manager_->Submit(request("nope"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("test_dataset:"));
  // Over --max_evaluation_examples: refused now, not after training.
  ModelEvaluator::Options small;
  small.max_examples = 20;
  ModelEvaluator small_evaluator(small, models_.get(), datasets_.get());
  {
    JobManager::Options so;
    so.evaluator = &small_evaluator;
    JobManager strict(so, jobs_.get(), datasets_.get(), models_.get(), events_.get());
    auto large = strict.Submit(request("many-pets"));
    EXPECT_EQ(large.status().code(), absl::StatusCode::kResourceExhausted);
    EXPECT_THAT(large.status().message(), HasSubstr("test_dataset: dataset \"many-pets\" has 40"));
  }
  auto birds = manager_->Submit(request("birds"));
  EXPECT_EQ(birds.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(birds.status().message(), HasSubstr("\"birds\" is not among"));

  absl::StatusOr<Job> job = manager_->Submit(request("pets-test"));
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(datasets_->Delete("pets-test").code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(manager_->Start().ok());
  const Job end = WaitForEnd(job->id());
  ASSERT_EQ(end.state(), kaizen::v1::JOB_STATE_SUCCEEDED) << end.error();
  std::set<int64_t> evaluated = {end.latest_version(), end.best_version()};
  for (int64_t version : evaluated) {
    auto stored = models_->Get("out", version);
    ASSERT_TRUE(stored.ok()) << stored.status();
    ASSERT_TRUE(stored->has_test_evaluation()) << "version " << version;
    const kaizen::v1::Evaluation& e = stored->test_evaluation();
    EXPECT_EQ(e.model(), "out");
    EXPECT_EQ(e.version(), version);
    EXPECT_EQ(e.dataset(), "pets-test");
    EXPECT_EQ(e.examples(), 8);
    // What EvaluateModel answers for the same version now.
    kaizen::v1::EvaluateModelRequest again;
    again.set_name("out");
    again.set_version(version);
    again.set_dataset("pets-test");
    auto now = evaluator.Evaluate(again, nullptr);
    ASSERT_TRUE(now.ok()) << now.status();
    EXPECT_EQ(now->accuracy(), e.accuracy());
    EXPECT_EQ(std::vector<int64_t>(now->confusion().begin(), now->confusion().end()),
              std::vector<int64_t>(e.confusion().begin(), e.confusion().end()));
  }
  const std::vector<std::string> messages = Messages(job->id());
  EXPECT_EQ(std::count_if(messages.begin(), messages.end(),
                          [](const std::string& m) {
                            return m.rfind("test dataset pets-test: version ", 0) == 0;
                          }),
            static_cast<int64_t>(evaluated.size()));
  // The job has ended: the test set is free to go.
  EXPECT_TRUE(datasets_->Delete("pets-test").ok());
}

// What the trainer decides reaches the job's events: on 4 images per class a
// validation split is dropped, and BatchNorm statistics are recomputed at
// the end.
// A version that cannot be evaluated (here: quarantined by serving before the
// job ends) is said in the job's events; the trained job still succeeds.
TEST_F(JobManagerTest, ATestSetThatCannotBeEvaluatedDoesNotFailATrainedJob) {
  ModelEvaluator evaluator(ModelEvaluator::Options{}, models_.get(), datasets_.get());
  JobManager::Options o;
  o.evaluator = &evaluator;
  MakeManager(o);
  UploadDataset("pets", 16);
  UploadDataset("pets-test", 8, "cats", "dogs", /*seed=*/1000);
  ASSERT_TRUE(models_->Quarantine("out", 1, "crashed the server while loading").ok());
  auto r = Request("pets", "out", 1);
  r.set_test_dataset("pets-test");
  absl::StatusOr<Job> job = manager_->Submit(r);
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_TRUE(manager_->Start().ok());
  const Job end = WaitForEnd(job->id());
  EXPECT_EQ(end.state(), kaizen::v1::JOB_STATE_SUCCEEDED) << end.error();
  ASSERT_EQ(end.latest_version(), 1);
  const std::vector<std::string> messages = Messages(job->id());
  EXPECT_THAT(messages, ::testing::Contains(HasSubstr(
                            "test dataset pets-test: version 1 was not evaluated: model \"out\" "
                            "version 1 is quarantined")));
  auto stored = models_->Get("out", 1);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_FALSE(stored->has_test_evaluation());
}

TEST_F(JobManagerTest, TheTrainersDecisionsAreJobEvents) {
  MakeManager();
  UploadDataset("pets", 8);
  auto r = Request("pets", "out", 2);
  r.mutable_hyperparameters()->mutable_validation()->set_split(0.25);
  absl::StatusOr<Job> job = manager_->Submit(r);
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_TRUE(manager_->Start().ok());
  ASSERT_EQ(WaitForEnd(job->id()).state(), kaizen::v1::JOB_STATE_SUCCEEDED);
  const std::vector<std::string> messages = Messages(job->id());
  auto starting = [&](const std::string& prefix) {
    return std::count_if(messages.begin(), messages.end(),
                         [&](const std::string& m) { return m.rfind(prefix, 0) == 0; });
  };
  EXPECT_EQ(starting("validation: a 0.25 split would leave a class"), 1)
      << testing::PrintToString(messages);
  EXPECT_EQ(starting("BatchNorm: the running statistics of the "), 1)
      << testing::PrintToString(messages);
}

// Serving hears of a job's output model once the job has ended, so that it
// loads the newest version even if nobody asked for the model meanwhile.
TEST_F(JobManagerTest, AnEndedJobHandsItsOutputModelToServing) {
  absl::Notification done;
  std::string done_for;
  JobManager::Options o;
  o.output_done = [&](const std::string& model) {
    done_for = model;
    done.Notify();
  };
  MakeManager(o);
  UploadDataset("pets", 8);
  absl::StatusOr<Job> job = manager_->Submit(Request("pets", "out", 1));
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_TRUE(manager_->Start().ok());
  ASSERT_EQ(WaitForEnd(job->id()).state(), kaizen::v1::JOB_STATE_SUCCEEDED);
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_EQ(done_for, "out");
}

TEST_F(JobManagerTest, DeletingADatasetCannotSlipBetweenAJobsCheckAndInsert) {
  JobManager::Options o;
  std::future<absl::Status> deletion;
  o.after_references_checked = [&] {
    // The dataset was found; a concurrent delete now gets its chance.
    deletion = std::async(std::launch::async, [&] { return datasets_->Delete("pets"); });
    deletion.wait_for(std::chrono::milliseconds(500));
  };
  MakeManager(o);
  UploadDataset("pets");
  absl::StatusOr<Job> job = manager_->Submit(Request("pets", "out"));
  ASSERT_TRUE(job.ok()) << job.status();
  const absl::Status deleted = deletion.get();
  // Either order is fine, but never both: the job was queued, so the delete
  // must have been refused, and the dataset must still be there.
  EXPECT_EQ(deleted.code(), absl::StatusCode::kFailedPrecondition) << deleted;
  EXPECT_TRUE(datasets_->Get("pets").ok());
}

TEST_F(JobManagerTest, TheJobRowPointsAtTheNewCheckpointBeforeOldOnesArePruned) {
  MakeManager();
  UploadDataset("pets");
  int pruned = 0;
  std::vector<std::string> violations;
  models_->set_listener({nullptr, [&](const std::string& name, int64_t version) {
                           ++pruned;
                           auto running = jobs_->InStates({kaizen::v1::JOB_STATE_RUNNING});
                           if (!running.ok() || running->size() != 1) return;
                           const Job& j = running->front();
                           if (j.latest_version() <= version) {
                             violations.push_back(
                                 absl::StrCat("pruned version ", version, " of ", name,
                                              " while the job row still pointed at version ",
                                              j.latest_version()));
                           }
                         }});
  kaizen::v1::StartFineTuneRequest r = Request("pets", "out", /*epochs=*/4);
  r.set_keep_checkpoints(1);
  ASSERT_TRUE(manager_->Start().ok());
  absl::StatusOr<Job> job = manager_->Submit(r);
  ASSERT_TRUE(job.ok()) << job.status();
  const Job done = WaitForEnd(job->id());
  EXPECT_EQ(done.state(), kaizen::v1::JOB_STATE_SUCCEEDED) << done.error();
  EXPECT_GT(pruned, 0);
  EXPECT_TRUE(violations.empty()) << violations.front();
}

TEST_F(JobManagerTest, AJobThatKeepsKillingTheServerEndsFailed) {
  UploadDataset("pets");
  auto insert_running = [&](const std::string& id, int attempts) {
    Job j;
    j.set_id(id);
    *j.mutable_request() = Request("pets", "out-" + id);
    j.set_state(kaizen::v1::JOB_STATE_RUNNING);
    j.set_attempts(attempts);
    ASSERT_TRUE(jobs_->Insert(j).ok());
  };
  insert_running("ft-poison", 3);
  insert_running("ft-unlucky", 1);
  JobManager::Options o;
  o.workers = 0;  // look at the states Start() leaves, nothing runs
  MakeManager(o);
  ASSERT_TRUE(manager_->Start().ok());
  absl::StatusOr<Job> poison = manager_->Get("ft-poison");
  ASSERT_TRUE(poison.ok());
  EXPECT_EQ(poison->state(), kaizen::v1::JOB_STATE_FAILED);
  EXPECT_THAT(poison->error(), HasSubstr("--max_job_attempts=3"));
  absl::StatusOr<Job> unlucky = manager_->Get("ft-unlucky");
  ASSERT_TRUE(unlucky.ok());
  EXPECT_EQ(unlucky->state(), kaizen::v1::JOB_STATE_QUEUED);
}

// A DISTILL job queued behind its teacher's job resolves the teacher version
// that is newest at submission; the teacher job's checkpoint retention keeps
// that version until the DISTILL job ends, so the job can load it.
TEST_F(JobManagerTest, CheckpointRetentionKeepsTheTeacherVersionsActiveJobsResolved) {
  UploadDataset("pets", 24);
  MakeManager();  // one worker: the DISTILL job waits for the teacher's
  ASSERT_TRUE(manager_->Start().ok());
  // 100 epochs without validation: a checkpoint every 10th, one kept.
  kaizen::v1::StartFineTuneRequest t = Request("pets", "teacher", 100);
  t.set_keep_checkpoints(1);
  absl::StatusOr<Job> teacher = manager_->Submit(t);
  ASSERT_TRUE(teacher.ok()) << teacher.status();
  for (int i = 0; i < 2400; ++i) {
    absl::StatusOr<Job> j = manager_->Get(teacher->id());
    if (j.ok() && j->latest_version() >= 1) break;
    absl::SleepFor(absl::Milliseconds(5));
  }

  kaizen::v1::StartFineTuneRequest d = Request("pets", "student", 1);
  d.set_strategy(kaizen::v1::STRATEGY_DISTILL);
  d.mutable_distillation()->set_teacher_model("teacher");
  absl::StatusOr<Job> student = manager_->Submit(d);
  ASSERT_TRUE(student.ok()) << student.status();
  const int64_t pinned = student->distillation().teacher_version();
  ASSERT_GE(pinned, 1);

  const Job taught = WaitForEnd(teacher->id());
  ASSERT_EQ(taught.state(), kaizen::v1::JOB_STATE_SUCCEEDED) << taught.error();
  ASSERT_LT(pinned, taught.latest_version())
      << "the teacher finished before the DISTILL job was submitted: nothing was tested";
  EXPECT_TRUE(models_->Get("teacher", pinned).ok()) << "retention kept the pinned version";

  const Job end = WaitForEnd(student->id());
  EXPECT_EQ(end.state(), kaizen::v1::JOB_STATE_SUCCEEDED) << end.error();
  EXPECT_EQ(end.distillation().teacher_version(), pinned);
}

// An INCREMENTAL job that continues its own model, keeping one checkpoint:
// the base version it pinned at submission outlives the retention of the
// versions it writes on top of it, and each of those carries its memory.
TEST_F(JobManagerTest, CheckpointRetentionKeepsTheBaseVersionOfAnIncrementalJob) {
  UploadDataset("pets", 24);
  UploadDataset("more-pets", 24, "cats", "dogs", /*seed=*/100);
  MakeManager();
  ASSERT_TRUE(manager_->Start().ok());
  absl::StatusOr<Job> base = manager_->Submit(Request("pets", "fm", 2));
  ASSERT_TRUE(base.ok()) << base.status();
  const Job trained = WaitForEnd(base->id());
  ASSERT_EQ(trained.state(), kaizen::v1::JOB_STATE_SUCCEEDED) << trained.error();
  ASSERT_EQ(trained.latest_version(), 2);

  kaizen::v1::StartFineTuneRequest inc = Request("more-pets", "fm", 12);
  inc.set_strategy(kaizen::v1::STRATEGY_INCREMENTAL);
  inc.set_base_model("fm");
  inc.set_keep_checkpoints(1);
  inc.mutable_incremental()->set_exemplars_per_class(3);
  // The exemplars may not come from the job's own dataset or test set: their
  // images would be replayed as training images.
  for (const char* field : {"dataset", "test_dataset"}) {
    kaizen::v1::StartFineTuneRequest bad = inc;
    if (std::string(field) == "dataset") bad.set_dataset("pets");
    if (std::string(field) == "test_dataset") bad.set_test_dataset("pets");
    absl::StatusOr<Job> refused = manager_->Submit(bad);
    ASSERT_FALSE(refused.ok()) << field;
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_THAT(std::string(refused.status().message()),
                HasSubstr(absl::StrCat("\"pets\", which is also the job's ", field)));
  }
  absl::StatusOr<Job> job = manager_->Submit(inc);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->incremental().base_version(), trained.latest_version());
  EXPECT_EQ(job->incremental().memory_source(), "datasets pets");
  // The dataset found through the base's job is written into the request,
  // so that it cannot be deleted while the job needs it.
  ASSERT_EQ(job->request().incremental().previous_datasets_size(), 1);
  EXPECT_EQ(job->request().incremental().previous_datasets(0), "pets");
  const Job end = WaitForEnd(job->id());
  ASSERT_EQ(end.state(), kaizen::v1::JOB_STATE_SUCCEEDED) << end.error();
  EXPECT_GT(end.latest_version(), trained.latest_version() + 1);
  EXPECT_TRUE(models_->Get("fm", trained.latest_version()).ok()) << "retention kept the base";
  // keep_checkpoints applies to the versions this job wrote, not to the
  // base job's older one.
  EXPECT_TRUE(models_->Get("fm", 1).ok()) << "the base job's version 1 was pruned";
  absl::StatusOr<datasets::DecodedDataset> memory =
      models_->ReadExemplars("fm", end.latest_version());
  ASSERT_TRUE(memory.ok()) << memory.status();
  EXPECT_EQ(memory->records.size(), 6u);  // 3 per class of 2
  EXPECT_EQ(end.incremental().memory_size(), 6);
  EXPECT_EQ(models_->ReadExemplars("fm", trained.latest_version()).status().code(),
            absl::StatusCode::kNotFound);
}

// A job that reported epochs but had written no checkpoint when the server
// died (without validation, checkpoints come about every tenth of the run)
// starts over at the next start, and forgets the epochs it had reported.
TEST_F(JobManagerTest, AJobRestartedBeforeItsFirstCheckpointForgetsItsEpochs) {
  UploadDataset("pets");
  JobManager::Options idle;
  idle.workers = 0;
  MakeManager(idle);
  ASSERT_TRUE(manager_->Start().ok());
  absl::StatusOr<Job> submitted = manager_->Submit(Request("pets", "out-early", 3));
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  manager_->Stop();
  manager_.reset();

  // What the row holds when the server dies during epoch 3 of a run whose
  // first checkpoint was due after it.
  absl::StatusOr<Job> row = jobs_->Get(submitted->id());
  ASSERT_TRUE(row.ok()) << row.status();
  Job died = *row;
  died.set_state(kaizen::v1::JOB_STATE_RUNNING);
  died.set_attempts(1);
  for (int epoch = 1; epoch <= 2; ++epoch) {
    kaizen::v1::EpochMetrics* m = died.add_history();
    m->set_epoch(epoch);
    m->set_train_loss(99);
  }
  died.set_epoch(2);
  died.set_step(5);
  ASSERT_EQ(died.latest_version(), 0);
  ASSERT_TRUE(jobs_->Update(died).ok());

  MakeManager();
  ASSERT_TRUE(manager_->Start().ok());
  const Job end = WaitForEnd(submitted->id());
  ASSERT_EQ(end.state(), kaizen::v1::JOB_STATE_SUCCEEDED) << end.error();
  ASSERT_EQ(end.history_size(), 3);
  for (int i = 0; i < end.history_size(); ++i) {
    EXPECT_EQ(end.history(i).epoch(), i + 1);
    EXPECT_NE(end.history(i).train_loss(), 99) << "epoch " << i + 1 << " is the dead run's";
  }
  EXPECT_EQ(end.epoch(), 3);
}

using kaizen::v1::JOB_STATE_CANCELLED;
using kaizen::v1::JOB_STATE_FAILED;
using kaizen::v1::JOB_STATE_PAUSED;
using kaizen::v1::JOB_STATE_QUEUED;
using kaizen::v1::JOB_STATE_RUNNING;
using kaizen::v1::JOB_STATE_SUCCEEDED;
using StateList = std::vector<kaizen::v1::JobState>;

// Settings that make every step depend on state a resume must restore: a
// shuffled sampler, augmentation, dropout, AdamW's moments, warm-up and a
// cosine schedule, validation every epoch. 24 images, 6 held out: 18 in
// batches of 4 make 5 steps per epoch (the last one of 2 images), 15 in all.
kaizen::v1::StartFineTuneRequest ExactRequest(kaizen::v1::Strategy strategy,
                                              const std::string& output) {
  kaizen::v1::StartFineTuneRequest r;
  r.set_strategy(strategy);
  r.set_base_model("cnn-small");
  r.set_dataset("pets");
  r.set_output_model(output);
  kaizen::v1::Hyperparameters* hp = r.mutable_hyperparameters();
  hp->set_epochs(3);
  hp->set_batch_size(4);
  hp->set_seed(11);
  hp->set_learning_rate(3e-3);
  hp->mutable_validation()->set_split(0.25);
  hp->mutable_optimizer()->set_kind(kaizen::v1::OPTIMIZER_ADAMW);
  hp->mutable_optimizer()->set_weight_decay(0.01);
  hp->mutable_schedule()->set_kind(kaizen::v1::SCHEDULE_COSINE);
  hp->mutable_schedule()->set_warmup_epochs(1);
  hp->set_label_smoothing(0.1);
  hp->mutable_head()->set_kind(kaizen::v1::HEAD_KIND_MLP);
  hp->mutable_head()->set_hidden_units(8);
  hp->mutable_head()->set_dropout(0.3);
  if (strategy != kaizen::v1::STRATEGY_FEATURE_EXTRACTION) {
    hp->mutable_augmentation()->set_enabled(true);
    hp->mutable_augmentation()->set_random_crop_padding(2);
    hp->mutable_augmentation()->set_horizontal_flip(true);
  } else {
    // Explicitly off: FEATURE_EXTRACTION would augment 24 images by default,
    // and this covers its feature cache.
    hp->mutable_augmentation()->set_enabled(false);
  }
  if (strategy == kaizen::v1::STRATEGY_FINE_TUNE) hp->set_head_warmup_epochs(1);
  return r;
}

// Per-epoch metrics equal to those of the uninterrupted run.
void ExpectSameHistory(const Job& uninterrupted, const Job& resumed) {
  ASSERT_EQ(resumed.history_size(), uninterrupted.history_size());
  for (int i = 0; i < resumed.history_size(); ++i) {
    const kaizen::v1::EpochMetrics& a = resumed.history(i);
    const kaizen::v1::EpochMetrics& b = uninterrupted.history(i);
    EXPECT_EQ(a.epoch(), b.epoch());
    EXPECT_NEAR(a.train_loss(), b.train_loss(), 1e-6) << "epoch " << b.epoch();
    EXPECT_NEAR(a.val_loss(), b.val_loss(), 1e-6) << "epoch " << b.epoch();
    EXPECT_EQ(a.train_accuracy(), b.train_accuracy()) << "epoch " << b.epoch();
    EXPECT_EQ(a.val_accuracy(), b.val_accuracy()) << "epoch " << b.epoch();
    EXPECT_EQ(a.learning_rate(), b.learning_rate()) << "epoch " << b.epoch();
  }
}

TEST_F(JobManagerTest, APausedQueuedJobKeepsItsPlaceAndHoldsWhatItUses) {
  UploadDataset("pets");
  JobManager::Options o;
  o.workers = 0;  // nothing runs: the queue alone
  MakeManager(o);
  ASSERT_TRUE(manager_->Start().ok());
  absl::StatusOr<Job> a = manager_->Submit(Request("pets", "out-a"));
  absl::StatusOr<Job> b = manager_->Submit(Request("pets", "out-b"));
  ASSERT_TRUE(a.ok() && b.ok());

  absl::StatusOr<Job> paused = manager_->Pause(a->id());
  ASSERT_TRUE(paused.ok()) << paused.status();
  EXPECT_EQ(paused->state(), JOB_STATE_PAUSED);
  EXPECT_EQ(paused->pause_reason(), "paused by a user");
  EXPECT_EQ(paused->pause_count(), 1);
  // Pausing again changes nothing.
  absl::StatusOr<Job> again = manager_->Pause(a->id());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->state(), JOB_STATE_PAUSED);
  EXPECT_EQ(again->pause_count(), 1);
  // A paused job is not claimed: b is next.
  auto next = jobs_->NextQueued();
  ASSERT_TRUE(next.ok() && next->has_value());
  EXPECT_EQ((*next)->id(), b->id());
  kaizen::v1::ListJobsRequest list;
  list.add_states(JOB_STATE_PAUSED);
  auto listed = manager_->List(list);
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->jobs_size(), 1);
  EXPECT_EQ(listed->jobs(0).id(), a->id());

  // Resumed, it is back at its old place: ahead of b, which came later.
  absl::StatusOr<Job> resumed = manager_->Resume(a->id());
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->state(), JOB_STATE_QUEUED);
  next = jobs_->NextQueued();
  ASSERT_TRUE(next.ok() && next->has_value());
  EXPECT_EQ((*next)->id(), a->id());
  // Resuming a queued job changes nothing.
  absl::StatusOr<Job> queued = manager_->Resume(a->id());
  ASSERT_TRUE(queued.ok());
  EXPECT_EQ(queued->state(), JOB_STATE_QUEUED);
  EXPECT_EQ(States(a->id()), (StateList{JOB_STATE_QUEUED, JOB_STATE_PAUSED, JOB_STATE_QUEUED}));

  // Unknown and ended jobs.
  EXPECT_EQ(manager_->Pause("ft-nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(manager_->Resume("ft-nope").status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(manager_->Cancel(b->id()).ok());
  absl::StatusOr<Job> ended = manager_->Pause(b->id());
  EXPECT_EQ(ended.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(ended.status().message(), HasSubstr("JOB_STATE_CANCELLED"));
  ended = manager_->Resume(b->id());
  EXPECT_EQ(ended.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(ended.status().message(), HasSubstr("JOB_STATE_CANCELLED"));

  // The paused job alone still holds its dataset, base model and output name.
  ASSERT_TRUE(manager_->Pause(a->id()).ok());
  EXPECT_EQ(datasets_->Delete("pets").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(*manager_->ModelInUse("cnn-small"));
  EXPECT_TRUE(NameIsHeld("out-a"));
  EXPECT_FALSE(NameIsHeld("out-b"));
  // Cancelling a paused job ends it and frees all of that.
  absl::StatusOr<Job> cancelled = manager_->Cancel(a->id());
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state(), JOB_STATE_CANCELLED);
  EXPECT_FALSE(NameIsHeld("out-a"));
  EXPECT_TRUE(datasets_->Delete("pets").ok());
}

// The stored row is written at epoch ends; GetJob and ListJobs show the
// step a running job is at, so a long first epoch does not read "step 0".
TEST_F(JobManagerTest, GetAndListShowARunningJobsLatestStep) {
  UploadDataset("pets", 24);
  std::vector<Job> seen;  // Get, then List, at step 3 of epoch 1
  JobManager::Options o;
  o.after_step = [&](const std::string& id, int64_t step) {
    if (step != 3) return;
    absl::StatusOr<Job> got = manager_->Get(id);
    ASSERT_TRUE(got.ok()) << got.status();
    seen.push_back(*got);
    kaizen::v1::ListJobsRequest list;
    list.add_states(JOB_STATE_RUNNING);
    absl::StatusOr<kaizen::v1::ListJobsResponse> listed = manager_->List(list);
    ASSERT_TRUE(listed.ok()) << listed.status();
    ASSERT_EQ(listed->jobs_size(), 1);
    seen.push_back(listed->jobs(0));
  };
  MakeManager(o);
  absl::StatusOr<Job> job = manager_->Submit(ExactRequest(kaizen::v1::STRATEGY_FULL, "out"));
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_TRUE(manager_->Start().ok());
  const Job end = WaitForEnd(job->id());
  ASSERT_EQ(end.state(), JOB_STATE_SUCCEEDED) << end.error();
  ASSERT_EQ(seen.size(), 2u);
  for (const Job& j : seen) {
    EXPECT_EQ(j.state(), JOB_STATE_RUNNING);
    EXPECT_EQ(j.step(), 3);
    EXPECT_EQ(j.total_steps(), 15);
    EXPECT_EQ(j.epoch(), 1);
  }
  // Once the job ends, the stored row is what they show.
  EXPECT_EQ(manager_->Get(job->id())->step(), 15);
}

// The same job, once straight through and once paused in the middle of an
// epoch and resumed, for every strategy: the per-epoch metrics must match.
// The checkpoint goes through the model store's files, as in production.
class JobPauseTest : public JobManagerTest,
                     public ::testing::WithParamInterface<kaizen::v1::Strategy> {};

TEST_P(JobPauseTest, APausedRunningJobContinuesWithTheSameLosses) {
  const kaizen::v1::Strategy strategy = GetParam();
  UploadDataset("pets", 24);
  std::string paused_id;  // set before the workers start
  JobManager::Options o;
  o.after_step = [&](const std::string& id, int64_t step) {
    if (id != paused_id || step != 7) return;  // the 2nd step of epoch 2
    absl::StatusOr<Job> answer = manager_->Pause(id);
    ASSERT_TRUE(answer.ok()) << answer.status();
    EXPECT_EQ(answer->state(), JOB_STATE_RUNNING);
    EXPECT_EQ(answer->pause_reason(), "paused by a user");
  };
  MakeManager(o);
  absl::StatusOr<Job> straight = manager_->Submit(ExactRequest(strategy, "straight"));
  absl::StatusOr<Job> job = manager_->Submit(ExactRequest(strategy, "paused"));
  ASSERT_TRUE(straight.ok() && job.ok()) << straight.status() << job.status();
  paused_id = job->id();
  ASSERT_TRUE(manager_->Start().ok());

  const Job uninterrupted = WaitForEnd(straight->id());
  ASSERT_EQ(uninterrupted.state(), JOB_STATE_SUCCEEDED) << uninterrupted.error();
  ASSERT_EQ(uninterrupted.total_steps(), 15);
  Job paused = WaitForState(paused_id, {JOB_STATE_PAUSED, JOB_STATE_SUCCEEDED, JOB_STATE_FAILED});
  ASSERT_EQ(paused.state(), JOB_STATE_PAUSED) << paused.error();
  EXPECT_EQ(paused.step(), 7);
  EXPECT_EQ(paused.epoch(), 2);
  EXPECT_EQ(paused.history_size(), 1);
  EXPECT_EQ(paused.pause_count(), 1);
  EXPECT_EQ(paused.pause_reason(), "paused by a user");
  EXPECT_TRUE(paused.preempted_by().empty());
  EXPECT_EQ(paused.attempts(), 0) << "a pause is not an attempt";
  // Versions: after epoch 1, and the pause's own checkpoint.
  EXPECT_EQ(paused.latest_version(), 2);
  EXPECT_TRUE(NameIsHeld("paused"));
  // The worker is free and the job stays paused.
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(manager_->Get(paused_id)->state(), JOB_STATE_PAUSED);

  absl::StatusOr<Job> resumed = manager_->Resume(paused_id);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->state(), JOB_STATE_QUEUED);
  const Job end = WaitForEnd(paused_id);
  ASSERT_EQ(end.state(), JOB_STATE_SUCCEEDED) << end.error();
  ExpectSameHistory(uninterrupted, end);
  EXPECT_EQ(end.step(), 15);
  EXPECT_EQ(end.attempts(), 1);
  EXPECT_EQ(States(paused_id),
            (StateList{JOB_STATE_QUEUED, JOB_STATE_RUNNING, JOB_STATE_PAUSED, JOB_STATE_QUEUED,
                       JOB_STATE_RUNNING, JOB_STATE_SUCCEEDED}));
  EXPECT_THAT(Messages(paused_id),
              ::testing::Contains("resuming from checkpoint version 2 (epoch 1 and 2 steps of "
                                  "epoch 2)"));
}

INSTANTIATE_TEST_SUITE_P(
    EveryStrategy, JobPauseTest,
    ::testing::Values(kaizen::v1::STRATEGY_FEATURE_EXTRACTION, kaizen::v1::STRATEGY_FINE_TUNE,
                      kaizen::v1::STRATEGY_FULL, kaizen::v1::STRATEGY_SCRATCH),
    [](const ::testing::TestParamInfo<kaizen::v1::Strategy>& info) {
      return kaizen::v1::Strategy_Name(info.param).substr(9);  // without "STRATEGY_"
    });

TEST_F(JobManagerTest, APausedJobStaysPausedAcrossARestart) {
  UploadDataset("pets");
  std::string id;
  JobManager::Options o;
  o.after_step = [&](const std::string& job_id, int64_t step) {
    if (job_id == id && step == 3) ASSERT_TRUE(manager_->Pause(job_id).ok());
  };
  MakeManager(o);
  absl::StatusOr<Job> job = manager_->Submit(Request("pets", "out", /*epochs=*/3));
  ASSERT_TRUE(job.ok()) << job.status();
  id = job->id();
  ASSERT_TRUE(manager_->Start().ok());
  ASSERT_EQ(WaitForState(id, {JOB_STATE_PAUSED, JOB_STATE_SUCCEEDED}).state(), JOB_STATE_PAUSED);

  manager_->Stop();
  MakeManager();
  ASSERT_TRUE(manager_->Start().ok());
  absl::SleepFor(absl::Milliseconds(500));
  absl::StatusOr<Job> after = manager_->Get(id);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->state(), JOB_STATE_PAUSED);
  EXPECT_TRUE(NameIsHeld("out"));
  EXPECT_EQ(datasets_->Delete("pets").code(), absl::StatusCode::kFailedPrecondition);

  ASSERT_TRUE(manager_->Resume(id).ok());
  const Job end = WaitForEnd(id);
  ASSERT_EQ(end.state(), JOB_STATE_SUCCEEDED) << end.error();
  std::vector<int> epochs;
  for (const auto& m : end.history()) epochs.push_back(m.epoch());
  EXPECT_EQ(epochs, (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(end.pause_count(), 1);
}

// A pause asked for and withdrawn before the trainer reaches its next step
// never happens.
TEST_F(JobManagerTest, AResumeBeforeThePauseTakesEffectWithdrawsIt) {
  UploadDataset("pets");
  std::string id;
  JobManager::Options o;
  o.after_step = [&](const std::string& job_id, int64_t step) {
    if (job_id != id || step != 2) return;
    ASSERT_TRUE(manager_->Pause(job_id).ok());
    absl::StatusOr<Job> resumed = manager_->Resume(job_id);
    ASSERT_TRUE(resumed.ok()) << resumed.status();
    EXPECT_EQ(resumed->state(), JOB_STATE_RUNNING);
  };
  MakeManager(o);
  absl::StatusOr<Job> job = manager_->Submit(Request("pets", "out", /*epochs=*/2));
  ASSERT_TRUE(job.ok());
  id = job->id();
  ASSERT_TRUE(manager_->Start().ok());
  const Job end = WaitForEnd(id);
  EXPECT_EQ(end.state(), JOB_STATE_SUCCEEDED) << end.error();
  EXPECT_EQ(end.pause_count(), 0);
  EXPECT_EQ(States(id), (StateList{JOB_STATE_QUEUED, JOB_STATE_RUNNING, JOB_STATE_SUCCEEDED}));
}

// Which job trained each step, in order.
class StepTrace {
 public:
  void Add(const std::string& id, int64_t step) {
    std::lock_guard<std::mutex> lock(mu_);
    steps_.emplace_back(id, step);
  }
  // The ids of consecutive runs of steps: {"a", "b", "a"} when b's steps
  // came in the middle of a's.
  std::vector<std::string> Runs() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::string> runs;
    for (const auto& [id, step] : steps_) {
      if (runs.empty() || runs.back() != id) runs.push_back(id);
    }
    return runs;
  }
  // The step `id` had reached when `other` took its first step.
  int64_t StepOfWhenOtherStarted(const std::string& id, const std::string& other) {
    std::lock_guard<std::mutex> lock(mu_);
    int64_t last = 0;
    for (const auto& [job, step] : steps_) {
      if (job == other) return last;
      if (job == id) last = step;
    }
    return -1;
  }

 private:
  std::mutex mu_;
  std::vector<std::pair<std::string, int64_t>> steps_;
};

// --preempt with one worker: a high-priority job arriving while a
// low-priority one runs takes the worker; the low one is checkpointed,
// PAUSED with the reason, requeued on its own, and continues after the high
// one ends with the losses it would have had without the interruption.
TEST_F(JobManagerTest, AHigherPriorityJobPreemptsAndThePreemptedJobContinuesExactly) {
  UploadDataset("pets", 24);
  StepTrace trace;
  std::string low_id, high_id;
  JobManager::Options o;
  o.preempt = true;
  o.after_step = [&](const std::string& id, int64_t step) {
    trace.Add(id, step);
    if (id != low_id || step != 7 || !high_id.empty()) return;
    kaizen::v1::StartFineTuneRequest r = Request("pets", "high", /*epochs=*/1);
    r.set_priority(5);
    absl::StatusOr<Job> high = manager_->Submit(r);
    ASSERT_TRUE(high.ok()) << high.status();
    high_id = high->id();
  };
  MakeManager(o);
  absl::StatusOr<Job> straight =
      manager_->Submit(ExactRequest(kaizen::v1::STRATEGY_FULL, "straight"));
  absl::StatusOr<Job> low = manager_->Submit(ExactRequest(kaizen::v1::STRATEGY_FULL, "low"));
  ASSERT_TRUE(straight.ok() && low.ok());
  low_id = low->id();
  ASSERT_TRUE(manager_->Start().ok());

  const Job uninterrupted = WaitForEnd(straight->id());
  ASSERT_EQ(uninterrupted.state(), JOB_STATE_SUCCEEDED) << uninterrupted.error();
  const Job low_end = WaitForEnd(low_id);
  ASSERT_FALSE(high_id.empty());
  const Job high_end = WaitForEnd(high_id);
  ASSERT_EQ(high_end.state(), JOB_STATE_SUCCEEDED) << high_end.error();
  ASSERT_EQ(low_end.state(), JOB_STATE_SUCCEEDED) << low_end.error();

  // The high job ran between step 7 and step 8 of the low one.
  EXPECT_EQ(trace.Runs(), (std::vector<std::string>{straight->id(), low_id, high_id, low_id}));
  EXPECT_EQ(trace.StepOfWhenOtherStarted(low_id, high_id), 7);
  EXPECT_EQ(low_end.preempted_by(), high_id);
  EXPECT_EQ(low_end.pause_reason(), absl::StrCat("preempted by job ", high_id));
  EXPECT_EQ(low_end.pause_count(), 1);
  EXPECT_EQ(low_end.attempts(), 1) << "a preemption is not an attempt";
  EXPECT_EQ(States(low_id), (StateList{JOB_STATE_QUEUED, JOB_STATE_RUNNING, JOB_STATE_PAUSED,
                                       JOB_STATE_QUEUED, JOB_STATE_RUNNING, JOB_STATE_SUCCEEDED}));
  ExpectSameHistory(uninterrupted, low_end);
  EXPECT_EQ(high_end.pause_count(), 0);
}

// A resumed job preempts like a new one.
TEST_F(JobManagerTest, AResumedJobOfHigherPriorityPreempts) {
  UploadDataset("pets");
  StepTrace trace;
  std::string low_id, high_id;
  JobManager::Options o;
  o.preempt = true;
  o.after_step = [&](const std::string& id, int64_t step) {
    trace.Add(id, step);
    if (id == low_id && step == 2) ASSERT_TRUE(manager_->Resume(high_id).ok());
  };
  MakeManager(o);
  kaizen::v1::StartFineTuneRequest r = Request("pets", "high", /*epochs=*/1);
  r.set_priority(5);
  absl::StatusOr<Job> high = manager_->Submit(r);
  ASSERT_TRUE(high.ok());
  high_id = high->id();
  ASSERT_TRUE(manager_->Pause(high_id).ok());
  absl::StatusOr<Job> low = manager_->Submit(Request("pets", "low", /*epochs=*/2));
  ASSERT_TRUE(low.ok());
  low_id = low->id();
  ASSERT_TRUE(manager_->Start().ok());
  const Job low_end = WaitForEnd(low_id);
  EXPECT_EQ(low_end.state(), JOB_STATE_SUCCEEDED) << low_end.error();
  EXPECT_EQ(WaitForEnd(high_id).state(), JOB_STATE_SUCCEEDED);
  EXPECT_EQ(trace.Runs(), (std::vector<std::string>{low_id, high_id, low_id}));
  EXPECT_EQ(low_end.preempted_by(), high_id);
}

// Equal priority never preempts, and nothing preempts without the option.
TEST_F(JobManagerTest, OnlyAStrictlyHigherPriorityPreemptsAndOnlyWithTheOption) {
  UploadDataset("pets");
  for (const bool preempt : {true, false}) {
    SCOPED_TRACE(preempt ? "--preempt" : "without --preempt");
    StepTrace trace;
    std::string running_id, other_id;
    JobManager::Options o;
    o.preempt = preempt;
    o.after_step = [&](const std::string& id, int64_t step) {
      trace.Add(id, step);
      if (id != running_id || step != 2 || !other_id.empty()) return;
      kaizen::v1::StartFineTuneRequest r =
          Request("pets", preempt ? "other-a" : "other-b", /*epochs=*/1);
      // With --preempt the same priority; without it, a far higher one.
      r.set_priority(preempt ? 3 : 9);
      absl::StatusOr<Job> other = manager_->Submit(r);
      ASSERT_TRUE(other.ok()) << other.status();
      other_id = other->id();
    };
    MakeManager(o);
    kaizen::v1::StartFineTuneRequest r =
        Request("pets", preempt ? "running-a" : "running-b", /*epochs=*/2);
    r.set_priority(3);
    absl::StatusOr<Job> running = manager_->Submit(r);
    ASSERT_TRUE(running.ok());
    running_id = running->id();
    ASSERT_TRUE(manager_->Start().ok());
    const Job end = WaitForEnd(running_id);
    EXPECT_EQ(end.state(), JOB_STATE_SUCCEEDED) << end.error();
    EXPECT_EQ(end.pause_count(), 0);
    ASSERT_FALSE(other_id.empty());
    EXPECT_EQ(WaitForEnd(other_id).state(), JOB_STATE_SUCCEEDED);
    EXPECT_EQ(trace.Runs(), (std::vector<std::string>{running_id, other_id}));
    manager_->Stop();
  }
}

// Replicas on one database (here one SQLite file, and the store's calls of
// another replica made directly): what a replica leaves between deciding a
// run's end and releasing the job's lease is not lost, and what a replica
// that lost the lease writes is not recorded.

// The replica died after recording the preemption and before requeueing the
// job: another replica puts it back in the queue and it runs.
TEST_F(JobManagerTest, APreemptedJobWhoseReplicaDiedBeforeRequeueingItRunsAgain) {
  UploadDataset("pets");
  absl::StatusOr<Job> job = JobOfADeadReplica();
  ASSERT_TRUE(job.ok()) << job.status();
  Job paused = *jobs_->Get(job->id());
  paused.set_state(JOB_STATE_PAUSED);
  paused.set_preempted_by("urgent");
  paused.set_pause_reason("preempted by job urgent");
  ASSERT_TRUE(jobs_->Update(paused).ok());

  // A pause now would be undone by the requeue: try again.
  absl::StatusOr<Job> pause = manager_->Pause(job->id());
  EXPECT_EQ(pause.status().code(), absl::StatusCode::kUnavailable) << pause.status();
  EXPECT_THAT(pause.status().message(), HasSubstr("was preempted and is being requeued"));

  ASSERT_TRUE(manager_->Start().ok());
  const Job end = WaitForEnd(job->id());
  EXPECT_EQ(end.state(), JOB_STATE_SUCCEEDED) << end.error();
  EXPECT_THAT(Messages(job->id()),
              ::testing::Contains("replica a stopped between pausing this job (preempted by job "
                                  "urgent) and requeueing it; replica b requeued it"));
  const StateList states = States(job->id());
  ASSERT_GE(states.size(), 3u);
  EXPECT_EQ(StateList(states.end() - 3, states.end()),
            (StateList{JOB_STATE_QUEUED, JOB_STATE_RUNNING, JOB_STATE_SUCCEEDED}));
}

// A cancel another replica left on the lease after this one's last renewal
// reaches a run that stopped (paused here) when its end is decided.
TEST_F(JobManagerTest, ACancelLeftOnTheLeaseJustBeforeARunStopsCancelsIt) {
  UploadDataset("pets");
  std::string id;
  JobManager::Options o = ReplicaOptions("a");
  o.after_step = [&](const std::string& job_id, int64_t step) {
    if (job_id != id || step != 1) return;
    auto holder = jobs_->RequestOfLeaseHolder(job_id, "cancel", absl::ToUnixMillis(absl::Now()));
    ASSERT_TRUE(holder.ok() && holder->has_value());
    ASSERT_TRUE(manager_->Pause(job_id).ok());
  };
  MakeManager(o);
  absl::StatusOr<Job> job = manager_->Submit(Request("pets", "out", /*epochs=*/3));
  ASSERT_TRUE(job.ok()) << job.status();
  id = job->id();
  ASSERT_TRUE(manager_->Start().ok());
  EXPECT_EQ(WaitForEnd(id).state(), JOB_STATE_CANCELLED);
  EXPECT_THAT(Messages(id),
              ::testing::Contains("cancellation requested; stopping after the current step"));
}

// One that reaches a run that had finished comes too late and says so.
TEST_F(JobManagerTest, ACancelLeftOnTheLeaseOfAFinishedRunComesTooLate) {
  UploadDataset("pets");
  JobManager::Options o = ReplicaOptions("a");
  o.before_lease_release = [&](const std::string& job_id) {
    auto holder = jobs_->RequestOfLeaseHolder(job_id, "cancel", absl::ToUnixMillis(absl::Now()));
    ASSERT_TRUE(holder.ok() && holder->has_value());
  };
  MakeManager(o);
  absl::StatusOr<Job> job = manager_->Submit(Request("pets", "out"));
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_TRUE(manager_->Start().ok());
  EXPECT_EQ(WaitForEnd(job->id()).state(), JOB_STATE_SUCCEEDED);
  EXPECT_THAT(Messages(job->id()),
              ::testing::Contains("the cancel asked through another replica came after the job "
                                  "had ended JOB_STATE_SUCCEEDED"));
}

// A cancel left on the lease after the run's end (PAUSED here) was decided
// and before the lease is released: the paused job is cancelled.
TEST_F(JobManagerTest, ACancelLeftOnTheLeaseAfterTheRunEndedCancelsThePausedJob) {
  UploadDataset("pets");
  std::string id;
  JobManager::Options o = ReplicaOptions("a");
  o.after_step = [&](const std::string& job_id, int64_t step) {
    if (job_id == id && step == 1) ASSERT_TRUE(manager_->Pause(job_id).ok());
  };
  o.before_lease_release = [&](const std::string& job_id) {
    ASSERT_EQ(jobs_->Get(job_id)->state(), JOB_STATE_PAUSED);
    auto holder = jobs_->RequestOfLeaseHolder(job_id, "cancel", absl::ToUnixMillis(absl::Now()));
    ASSERT_TRUE(holder.ok() && holder->has_value());
    EXPECT_EQ(**holder, "a");
  };
  MakeManager(o);
  absl::StatusOr<Job> job = manager_->Submit(Request("pets", "out", /*epochs=*/3));
  ASSERT_TRUE(job.ok()) << job.status();
  id = job->id();
  ASSERT_TRUE(manager_->Start().ok());
  EXPECT_EQ(WaitForEnd(id).state(), JOB_STATE_CANCELLED);
  EXPECT_EQ(States(id), (StateList{JOB_STATE_QUEUED, JOB_STATE_RUNNING, JOB_STATE_PAUSED,
                                   JOB_STATE_CANCELLED}));
  EXPECT_THAT(Messages(id), ::testing::Contains("the cancellation asked through another replica "
                                                "reached the job as its run ended; cancelled"));
}

// Another replica cancels a preempted job in the moment it is PAUSED, before
// its replica requeues it: the cancel stands and the job never runs again.
TEST_F(JobManagerTest, ACancelOfAPreemptedJobBeforeItsRequeueStands) {
  UploadDataset("pets", 24);
  std::string low_id, high_id;
  JobManager::Options o = ReplicaOptions("a");
  o.preempt = true;
  o.after_step = [&](const std::string& job_id, int64_t step) {
    if (job_id != low_id || step != 1 || !high_id.empty()) return;
    kaizen::v1::StartFineTuneRequest r = Request("pets", "high");
    r.set_priority(5);
    absl::StatusOr<Job> high = manager_->Submit(r);
    ASSERT_TRUE(high.ok()) << high.status();
    high_id = high->id();
  };
  o.before_lease_release = [&](const std::string& job_id) {
    if (job_id != low_id) return;
    // What CancelJob through another replica does: the conditional change,
    // then the row.
    Job job = *jobs_->Get(job_id);
    ASSERT_EQ(job.state(), JOB_STATE_PAUSED);
    ASSERT_TRUE(*jobs_->TransitionState(job_id, JOB_STATE_PAUSED, JOB_STATE_CANCELLED));
    job.set_state(JOB_STATE_CANCELLED);
    ASSERT_TRUE(jobs_->Update(job).ok());
  };
  MakeManager(o);
  absl::StatusOr<Job> low = manager_->Submit(Request("pets", "low", /*epochs=*/3));
  ASSERT_TRUE(low.ok()) << low.status();
  low_id = low->id();
  ASSERT_TRUE(manager_->Start().ok());
  ASSERT_FALSE(WaitForState(low_id, {JOB_STATE_CANCELLED}).id().empty());
  ASSERT_FALSE(high_id.empty());
  EXPECT_EQ(WaitForEnd(high_id).state(), JOB_STATE_SUCCEEDED);
  manager_->Stop();
  EXPECT_EQ(jobs_->Get(low_id)->state(), JOB_STATE_CANCELLED);
  // No QUEUED (nor RUNNING) after the PAUSED: the cancel's own CANCELLED
  // event is the other replica's to write.
  EXPECT_EQ(States(low_id), (StateList{JOB_STATE_QUEUED, JOB_STATE_RUNNING, JOB_STATE_PAUSED}));
  EXPECT_THAT(Messages(low_id),
              ::testing::Contains("not requeued: the job became JOB_STATE_CANCELLED through "
                                  "another replica"));
}

// Replica "b" takes over a job of this replica ("a"), as if "a" had stalled
// past its lease: b claims it with a clock past a's lease and writes its own
// row, which carries `marker` in its device field.
void TakeOver(store::JobStore* jobs, const std::string& id, const std::string& marker) {
  const int64_t later = absl::ToUnixMillis(absl::Now()) + 120000;
  std::string previous;
  auto taken = jobs->ClaimExpired("b", later, 60000, {}, &previous);
  ASSERT_TRUE(taken.ok() && taken->has_value()) << taken.status();
  ASSERT_EQ((*taken)->id(), id);
  EXPECT_EQ(previous, "a");
  Job row = *jobs->Get(id);
  row.set_device(marker);
  ASSERT_TRUE(*jobs->UpdateIfLeased(row, "b", later));
}

// Replica b took job `id` over before replica a recorded anything of its
// run: b's row stands, with no epoch and no version of a's, no version of
// "out" exists, and no epoch or checkpoint was told.
void ExpectNothingOfARecorded(store::JobStore* jobs, store::ModelStore* models,
                              const std::string& id) {
  const Job row = *jobs->Get(id);
  EXPECT_EQ(row.device(), "taken by b");
  EXPECT_EQ(row.latest_version(), 0);
  EXPECT_TRUE(row.history().empty());
  EXPECT_EQ(models->Get("out", 0).status().code(), absl::StatusCode::kNotFound);
  auto events = jobs->Events(id, 0);
  ASSERT_TRUE(events.ok()) << events.status();
  for (const kaizen::v1::JobEvent& e : *events) {
    EXPECT_FALSE(e.has_epoch_summary()) << e.DebugString();
    EXPECT_FALSE(e.has_checkpoint()) << e.DebugString();
  }
}

// What a replica stalled past its lease does once it wakes is not recorded:
// its epoch, its checkpoint and its row writes are refused, so the replica
// that took the job over owns the row and the model.
TEST_F(JobManagerTest, AReplicaThatLostTheLeaseMidEpochRecordsNothingMore) {
  UploadDataset("pets");
  std::string id;
  JobManager::Options o = ReplicaOptions("a");
  o.after_step = [&](const std::string& job_id, int64_t step) {
    if (job_id == id && step == 1) TakeOver(jobs_.get(), job_id, "taken by b");
  };
  RunAJobThenAnother(o, &id);

  ExpectNothingOfARecorded(jobs_.get(), models_.get(), id);
  EXPECT_EQ(jobs_->Get(id)->state(), JOB_STATE_RUNNING);
}

// Replica a renews its lease before it tells an epoch or a checkpoint, then
// stalls for a whole lease, and b takes the job over (TakeOver, at the
// event's publication): the event is refused with the lease's check in the
// same transaction, so watchers hear nothing of a's run of b's job.
TEST_F(JobManagerTest, AReplicaThatStallsRightAfterARenewalTellsNoEpochOfAJobTakenOver) {
  UploadDataset("pets");
  std::string id;
  JobManager::Options o = ReplicaOptions("a");
  o.before_leased_event = [&](const std::string& job_id, const kaizen::v1::JobEvent& e) {
    if (job_id == id && e.has_epoch_summary()) TakeOver(jobs_.get(), id, "taken by b");
  };
  RunAJobThenAnother(o, &id);

  ExpectNothingOfARecorded(jobs_.get(), models_.get(), id);
}

// The same stall before the checkpoint is recorded: the row that would
// point at the version and the checkpoint's event are refused together, and
// the version a wrote is withdrawn, so the row b resumes from and what
// watchers were told agree.
TEST_F(JobManagerTest, AReplicaThatStallsRightAfterARenewalTellsNoCheckpointOfAJobTakenOver) {
  UploadDataset("pets");
  std::string id;
  JobManager::Options o = ReplicaOptions("a");
  o.before_leased_event = [&](const std::string& job_id, const kaizen::v1::JobEvent& e) {
    if (job_id == id && e.has_checkpoint()) TakeOver(jobs_.get(), id, "taken by b");
  };
  RunAJobThenAnother(o, &id);

  const Job row = *jobs_->Get(id);
  EXPECT_EQ(row.device(), "taken by b");
  EXPECT_EQ(row.latest_version(), 0);
  EXPECT_EQ(models_->Get("out", 1).status().code(), absl::StatusCode::kNotFound);
  auto events = jobs_->Events(id, 0);
  ASSERT_TRUE(events.ok()) << events.status();
  std::vector<int64_t> epochs;
  for (const kaizen::v1::JobEvent& e : *events) {
    if (e.has_epoch_summary()) epochs.push_back(e.epoch_summary().epoch());
    EXPECT_FALSE(e.has_checkpoint()) << e.DebugString();
  }
  EXPECT_EQ(epochs, (std::vector<int64_t>{1}));  // told while a held the lease
}

// The same stall before the checkpoint's version is written: its row is
// refused with the lease's check in the same transaction, so no version of
// a's run is ever seen (serving is not told of one), and its files go.
TEST_F(JobManagerTest, AReplicaThatStallsRightAfterARenewalStoresNoVersionOfAJobTakenOver) {
  UploadDataset("pets");
  std::string id;
  std::vector<int64_t> told;
  models_->set_listener({[&](const kaizen::v1::Model& m) {
                           if (m.name() == "out") told.push_back(m.version());
                         },
                         nullptr});
  JobManager::Options o = ReplicaOptions("a");
  o.before_version_written = [&](const std::string& job_id) {
    if (job_id == id) TakeOver(jobs_.get(), id, "taken by b");
  };
  RunAJobThenAnother(o, &id);

  const Job row = *jobs_->Get(id);
  EXPECT_EQ(row.device(), "taken by b");
  EXPECT_EQ(row.latest_version(), 0);
  EXPECT_TRUE(told.empty());
  EXPECT_EQ(models_->Get("out", 0).status().code(), absl::StatusCode::kNotFound);
  std::error_code ec;
  for (const auto& f : std::filesystem::directory_iterator(dir_.path() + "/models/out", ec)) {
    ADD_FAILURE() << "left behind: " << f.path();
  }
}

// The same stall before a message of the run (here, that FINE_TUNE of a
// randomly initialised built-in transfers nothing): the message is refused
// with the lease's check, and nothing of the run is recorded after it.
TEST_F(JobManagerTest, AReplicaThatStallsRightAfterARenewalTellsNoMessageOfAJobTakenOver) {
  UploadDataset("pets");
  std::string id;
  bool taken = false;
  JobManager::Options o = ReplicaOptions("a");
  o.before_leased_event = [&](const std::string& job_id, const kaizen::v1::JobEvent& e) {
    if (job_id == id && !taken && absl::StrContains(e.message(), "transfers nothing")) {
      TakeOver(jobs_.get(), id, "taken by b");
      taken = true;
    }
  };
  kaizen::v1::StartFineTuneRequest r = Request("pets", "out", /*epochs=*/3);
  r.set_strategy(kaizen::v1::STRATEGY_FINE_TUNE);
  RunAJobThenAnother(o, &id, r);

  ASSERT_TRUE(taken);
  ExpectNothingOfARecorded(jobs_.get(), models_.get(), id);
  for (const std::string& m : Messages(id)) {
    EXPECT_FALSE(absl::StrContains(m, "transfers nothing")) << m;
  }
}

// The same stall before a tuning trial's result is told: the trial's line
// and the row that records the trial are refused together, and the run
// tells nothing more (its other messages are fenced by the lease too).
TEST_F(JobManagerTest, AReplicaThatStallsRightAfterARenewalTellsNoTrialOfAJobTakenOver) {
  UploadDataset("pets", 16);
  std::string id;
  bool taken = false;
  std::vector<std::string> after_takeover;  // messages a's run tried to tell
  JobManager::Options o = ReplicaOptions("a");
  o.before_leased_event = [&](const std::string& job_id, const kaizen::v1::JobEvent& e) {
    if (job_id != id || !e.has_message()) return;
    if (!taken && absl::StartsWith(e.message(), "tuning trial")) {
      TakeOver(jobs_.get(), id, "taken by b");
      taken = true;
    }
    if (taken) after_takeover.push_back(e.message());
  };
  kaizen::v1::StartFineTuneRequest r = Request("pets", "out", /*epochs=*/2);
  r.mutable_tuning()->set_max_trials(4);
  r.mutable_tuning()->set_reduction_factor(2);
  RunAJobThenAnother(o, &id, r);

  ASSERT_TRUE(taken);
  ASSERT_FALSE(after_takeover.empty());
  const Job row = *jobs_->Get(id);
  EXPECT_EQ(row.device(), "taken by b");
  EXPECT_EQ(row.tuning().trials_size(), 0);
  for (const std::string& m : Messages(id)) {
    EXPECT_THAT(after_takeover, ::testing::Not(::testing::Contains(m)));
    EXPECT_FALSE(absl::StartsWith(m, "tuning trial")) << m;
  }
}

// Replica a stalled past its lease and b took the job over; a's run has not
// noticed yet when a user cancels or pauses through a: the request is left
// on b's lease, not only on a's stale run, and the job stays b's.
TEST_F(JobManagerTest, ACancelThroughAReplicaThatLostTheJobReachesTheReplicaRunningItNow) {
  AskThroughAReplicaThatLostTheJob("cancel");
}

TEST_F(JobManagerTest, APauseThroughAReplicaThatLostTheJobReachesTheReplicaRunningItNow) {
  AskThroughAReplicaThatLostTheJob("pause");
}

// Replica a stalled past its lease and nobody took the job over yet when a
// user cancels through a: the job ends CANCELLED there and then, and a's
// stale run, which wakes to the cancel, records nothing more. While the
// cancel holds the job, the lease is not a's runs': their writes are refused.
TEST_F(JobManagerTest, ACancelThroughAStalledReplicaEndsTheJobNobodyTookOver) {
  UploadDataset("pets");
  std::string id;
  JobManager::Options o = ReplicaOptions("a");
  o.after_step = [&](const std::string& job_id, int64_t step) {
    if (job_id != id || step != 1) return;
    {
      store::Database* db = metadata_->db();
      absl::MutexLock lock(&db->mutex());
      ASSERT_TRUE(db->Exec(absl::StrCat("UPDATE job_leases SET expires_ms = 0 WHERE job_id = '",
                                        job_id, "'"))
                      .ok());
    }
    absl::StatusOr<Job> answer = manager_->Cancel(job_id);
    ASSERT_TRUE(answer.ok()) << answer.status();
    EXPECT_EQ(answer->state(), JOB_STATE_CANCELLED);
  };
  bool checked = false;
  o.after_taking_a_dead_replicas_job = [&](const std::string& job_id) {
    const int64_t now = absl::ToUnixMillis(absl::Now());
    EXPECT_FALSE(*jobs_->UpdateIfLeased(*jobs_->Get(job_id), "a", now));
    EXPECT_FALSE((*jobs_->RenewLeases("a", {job_id}, now, 60000))[job_id].held);
    checked = true;
  };
  RunAJobThenAnother(o, &id);

  EXPECT_TRUE(checked);
  EXPECT_EQ(jobs_->Get(id)->state(), JOB_STATE_CANCELLED);
  // The lease the cancel took is given back, and nothing of the stale run
  // (its final checkpoint, the version it wrote) came after the end.
  EXPECT_FALSE(
      jobs_->RequestOfLeaseHolder(id, "pause", absl::ToUnixMillis(absl::Now()))->has_value());
  EXPECT_EQ(models_->Get("out", 0).status().code(), absl::StatusCode::kNotFound);
  auto events = jobs_->Events(id, 0);
  ASSERT_TRUE(events.ok()) << events.status();
  bool ended = false;
  for (const kaizen::v1::JobEvent& e : *events) {
    EXPECT_FALSE(e.has_epoch_summary()) << e.DebugString();
    EXPECT_FALSE(e.has_checkpoint()) << e.DebugString();
    EXPECT_FALSE(ended && e.event_case() == kaizen::v1::JobEvent::kState) << e.DebugString();
    ended = ended || e.state() == JOB_STATE_CANCELLED;
  }
  EXPECT_TRUE(ended);
}

// A cancel through the replica that runs the job is left on its own lease
// too: if the replica stalls past its lease right after answering, before
// its run saw the cancel, the replica that takes the job over gets it.
TEST_F(JobManagerTest, ACancelOutlivesAStallOfTheReplicaThatAnsweredIt) {
  UploadDataset("pets");
  std::string id;
  JobManager::Options o = ReplicaOptions("a");
  o.after_step = [&](const std::string& job_id, int64_t step) {
    if (job_id != id || step != 1) return;
    absl::StatusOr<Job> answer = manager_->Cancel(job_id);
    ASSERT_TRUE(answer.ok()) << answer.status();
    TakeOver(jobs_.get(), job_id, "taken by b");
  };
  RunAJobThenAnother(o, &id);

  auto lease = *jobs_->RenewLeases("b", {id}, absl::ToUnixMillis(absl::Now()), 60000);
  EXPECT_TRUE(lease[id].held);
  EXPECT_EQ(lease[id].request, "cancel");
}

// That copy on its own lease is no late request through another replica
// when the run ends: here the cancel comes once the last epoch's version is
// written, after the trainer's last look at the cancel flag; the job ends
// CANCELLED as any cancel before the end is decided makes it.
TEST_F(JobManagerTest, ACancelAfterTheLastEpochIsNoLateRequestOfAnotherReplica) {
  UploadDataset("pets");
  std::string id;
  bool asked = false;
  JobManager::Options o = ReplicaOptions("a");
  o.after_version_written = [&](const std::string& job_id, int64_t version) {
    if (job_id != id || version != 1) return;
    ASSERT_TRUE(manager_->Cancel(job_id).ok());
    asked = true;
  };
  MakeManager(o);
  absl::StatusOr<Job> job = manager_->Submit(Request("pets", "out"));
  ASSERT_TRUE(job.ok()) << job.status();
  id = job->id();
  ASSERT_TRUE(manager_->Start().ok());
  EXPECT_EQ(WaitForEnd(id).state(), JOB_STATE_CANCELLED);
  EXPECT_TRUE(asked);
  EXPECT_THAT(Messages(id),
              ::testing::Contains("cancellation requested; stopping after the current step"));
  EXPECT_THAT(Messages(id),
              ::testing::Not(::testing::Contains(HasSubstr("through another replica"))));
}

// The lease is lost between writing a checkpoint's version and pointing the
// row at it: the version is withdrawn, the row stays the taker's.
TEST_F(JobManagerTest, AVersionWrittenAsTheLeaseWasLostIsWithdrawn) {
  UploadDataset("pets");
  std::string id;
  std::vector<int64_t> written;
  JobManager::Options o = ReplicaOptions("a");
  o.after_version_written = [&](const std::string& job_id, int64_t version) {
    written.push_back(version);
    if (job_id == id && written.size() == 2) TakeOver(jobs_.get(), job_id, "taken by b");
  };
  RunAJobThenAnother(o, &id);

  ASSERT_EQ(written, (std::vector<int64_t>{1, 2, 1}));  // out 1, out 2, next 1
  const Job row = *jobs_->Get(id);
  EXPECT_EQ(row.device(), "taken by b");
  EXPECT_EQ(row.latest_version(), 1);  // as a recorded it before losing the lease
  absl::StatusOr<kaizen::v1::Model> out = models_->Get("out", 0);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(std::vector<int64_t>(out->versions().begin(), out->versions().end()),
            (std::vector<int64_t>{1}));
}

// The number of a withdrawn version is handed out again: here replica b,
// having taken the job over while a stalled after writing version 2,
// withdraws a's version 2 and writes and records its own version 2. When a
// wakes, its withdrawal (by the bytes it wrote, not the number) leaves b's.
TEST_F(JobManagerTest, AStalledReplicasWithdrawalLeavesTheTakersVersionOfTheSameNumber) {
  UploadDataset("pets");
  std::string id;
  JobManager::Options o = ReplicaOptions("a");
  o.after_version_written = [&](const std::string& job_id, int64_t version) {
    if (job_id != id || version != 2) return;
    TakeOver(jobs_.get(), job_id, "taken by b");
    const std::string a_sha = models_->Get("out", 2)->sha256();
    ASSERT_TRUE(models_->RemoveVersion("out", 2, a_sha).ok());
    const kaizen::v1::Model b_version = AddOutVersion(job_id, "replica b's epoch 2");
    ASSERT_EQ(b_version.version(), 2);
    ASSERT_NE(b_version.sha256(), a_sha);
    Job row = *jobs_->Get(job_id);
    row.set_latest_version(2);
    ASSERT_TRUE(*jobs_->UpdateIfLeased(row, "b", absl::ToUnixMillis(absl::Now()) + 120000));
  };
  RunAJobThenAnother(o, &id);

  EXPECT_EQ(jobs_->Get(id)->latest_version(), 2);
  absl::StatusOr<kaizen::v1::Model> out = models_->Get("out", 0);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(std::vector<int64_t>(out->versions().begin(), out->versions().end()),
            (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(models_->Get("out", 2)->description(), "replica b's epoch 2");
}

// A replica killed between writing a checkpoint's version and recording it
// leaves the version behind: the job's next run (here on replica b, after
// the takeover) withdraws it and the output holds only what the job records.
TEST_F(JobManagerTest, AVersionLeftUnrecordedIsWithdrawnWhenTheJobRunsAgain) {
  UploadDataset("pets");
  absl::StatusOr<Job> job = JobOfADeadReplica();
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_EQ(AddOutVersion(job->id(), "left behind by replica a").version(), 1);

  ASSERT_TRUE(manager_->Start().ok());
  const Job end = WaitForEnd(job->id());
  EXPECT_EQ(end.state(), JOB_STATE_SUCCEEDED) << end.error();
  // The number is free again: the run's own epoch takes it.
  EXPECT_EQ(end.latest_version(), 1);
  absl::StatusOr<kaizen::v1::Model> out = models_->Get("out", 0);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(std::vector<int64_t>(out->versions().begin(), out->versions().end()),
            (std::vector<int64_t>{1}));
  EXPECT_NE(out->description(), "left behind by replica a");
  EXPECT_EQ(out->job_id(), job->id());
  EXPECT_THAT(Messages(job->id()),
              ::testing::Contains("withdrew version 1 of out: an earlier run of this job wrote "
                                  "it and stopped before recording it"));
}

// A job that will not run again withdraws what its last run left
// unrecorded when it ends: here replica a recorded version 1, wrote version 2
// and died; the job, cancelled through replica b, keeps only version 1.
TEST_F(JobManagerTest, AVersionLeftUnrecordedIsWithdrawnWhenTheJobIsCancelledInstead) {
  UploadDataset("pets");
  absl::StatusOr<Job> job = JobOfADeadReplica();
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_EQ(AddOutVersion(job->id(), "recorded by replica a").version(), 1);
  RecordRunning(job->id(), /*latest_version=*/1);
  ASSERT_EQ(AddOutVersion(job->id(), "left behind by replica a").version(), 2);

  absl::StatusOr<Job> cancelled = manager_->Cancel(job->id());
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(jobs_->Get(job->id())->state(), JOB_STATE_CANCELLED);
  // The lease b took to end it is given back.
  EXPECT_FALSE(jobs_->RequestOfLeaseHolder(job->id(), "pause", absl::ToUnixMillis(absl::Now()))
                   ->has_value());
  absl::StatusOr<kaizen::v1::Model> out = models_->Get("out", 0);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(std::vector<int64_t>(out->versions().begin(), out->versions().end()),
            (std::vector<int64_t>{1}));
  EXPECT_EQ(out->description(), "recorded by replica a");
  // Said before the end, which closes every watcher's stream.
  auto events = jobs_->Events(job->id(), 0);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_FALSE(events->empty());
  EXPECT_EQ(events->back().state(), JOB_STATE_CANCELLED);
  EXPECT_EQ(events->at(events->size() - 2).message(),
            "withdrew version 2 of out: an earlier run of this job wrote it and stopped before "
            "recording it");
}

// Replica c takes the dead replica's job over between b's cancel finding
// no live lease and b ending the job: the job stays c's and RUNNING, and
// the cancel is left on c's lease like any cancel of a live replica's job.
TEST_F(JobManagerTest, ACancelRacingATakeoverOfADeadReplicasJobBecomesARequestToTheTaker) {
  UploadDataset("pets");
  bool taken = false;
  JobManager::Options b = ReplicaOptions("b");
  b.before_taking_a_dead_replicas_job = [&](const std::string&) {
    if (taken) return;
    absl::StatusOr<std::optional<Job>> c =
        jobs_->ClaimExpired("c", absl::ToUnixMillis(absl::Now()), 60000, {}, nullptr);
    taken = c.ok() && c->has_value();
  };
  absl::StatusOr<Job> job = JobOfADeadReplica(std::move(b));
  ASSERT_TRUE(job.ok()) << job.status();
  RecordRunning(job->id());

  absl::StatusOr<Job> answer = manager_->Cancel(job->id());
  ASSERT_TRUE(taken);
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->state(), JOB_STATE_RUNNING);
  EXPECT_EQ(jobs_->Get(job->id())->state(), JOB_STATE_RUNNING);
  auto lease = (*jobs_->RenewLeases("c", {job->id()}, absl::ToUnixMillis(absl::Now()), 60000));
  EXPECT_TRUE(lease[job->id()].held);
  EXPECT_EQ(lease[job->id()].request, "cancel");
  auto events = jobs_->Events(job->id(), 0);
  ASSERT_TRUE(events.ok() && !events->empty());
  EXPECT_THAT(events->back().message(), HasSubstr("replica c stops the job"));
}

// A version another active job names as its base stays, recorded or not:
// here job 2 was submitted to fine-tune out:1, which job 1's dead replica
// wrote and never recorded, before job 1 was cancelled.
TEST_F(JobManagerTest, AnUnrecordedVersionAnotherJobStartsFromIsKept) {
  UploadDataset("pets");
  absl::StatusOr<Job> job = JobOfADeadReplica();
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_EQ(AddOutVersion(job->id(), "left behind by replica a").version(), 1);
  RecordRunning(job->id());
  kaizen::v1::StartFineTuneRequest r = Request("pets", "from-out");
  r.set_strategy(kaizen::v1::STRATEGY_FINE_TUNE);
  r.set_base_model("out:1");
  absl::StatusOr<Job> second = manager_->Submit(r);
  ASSERT_TRUE(second.ok()) << second.status();

  absl::StatusOr<Job> cancelled = manager_->Cancel(job->id());
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_TRUE(models_->Get("out", 1).ok());
  EXPECT_THAT(Messages(job->id()), ::testing::Not(::testing::Contains(HasSubstr("withdrew"))));
}

// The same for a lone server: a job whose runs kept killing the server ends
// FAILED at start-up, and the version its last run wrote before the crash,
// never recorded, goes with it.
TEST_F(JobManagerTest, AJobFailedAfterItsAttemptsKeepsOnlyWhatItRecorded) {
  UploadDataset("pets");
  Job j;
  j.set_id("ft-poison");
  *j.mutable_request() = Request("pets", "out");
  j.set_state(JOB_STATE_RUNNING);
  j.set_attempts(3);
  ASSERT_TRUE(jobs_->Insert(j).ok());
  ASSERT_EQ(AddOutVersion("ft-poison", "written before the crash").version(), 1);
  JobManager::Options o;
  o.workers = 0;
  MakeManager(o);
  ASSERT_TRUE(manager_->Start().ok());

  EXPECT_EQ(jobs_->Get("ft-poison")->state(), JOB_STATE_FAILED);
  EXPECT_EQ(models_->Get("out", 1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Messages("ft-poison"), ::testing::Contains(HasSubstr("withdrew version 1 of out")));
}

// A replica whose database calls hang (here its lease renewals) learns that
// it lost a job only when a renewal or a fenced write gets through. Once its
// lease has run out by its own clock, its run reports no more progress:
// watchers are not shown steps that nothing will record.
TEST_F(JobManagerTest, ARunWhoseLeaseRanOutReportsNoMoreProgress) {
  UploadDataset("pets");
  std::string id;
  std::atomic<bool> stall{false};
  JobManager::Options o = ReplicaOptions("a");
  // Renewals every second; margins of seconds for a loaded machine.
  o.job_lease = absl::Seconds(3);
  o.progress_interval = absl::ZeroDuration();
  o.max_job_attempts = 1;  // the job, once orphaned, is failed, not run again
  o.before_lease_renewal = [&] {
    if (stall.exchange(false)) absl::SleepFor(absl::Seconds(10));
  };
  o.after_step = [&](const std::string& job_id, int64_t step) {
    if (job_id != id || step != 2) return;
    stall = true;
    absl::SleepFor(absl::Seconds(6));  // the lease runs out meanwhile
  };
  MakeManager(o);
  absl::StatusOr<Job> job = manager_->Submit(Request("pets", "out", /*epochs=*/3));
  ASSERT_TRUE(job.ok()) << job.status();
  id = job->id();
  ASSERT_TRUE(manager_->Start().ok());
  EXPECT_EQ(WaitForEnd(id).state(), JOB_STATE_FAILED);

  std::vector<int64_t> steps;
  auto events = jobs_->Events(id, 0);
  ASSERT_TRUE(events.ok()) << events.status();
  for (const kaizen::v1::JobEvent& e : *events) {
    if (e.has_progress()) steps.push_back(e.progress().step());
  }
  EXPECT_EQ(steps, (std::vector<int64_t>{1}));
}

// A replica that lost the job after training stores no test evaluation: the
// job's new holder may have written a version of the same number meanwhile.
TEST_F(JobManagerTest, AReplicaThatLostTheLeaseStoresNoTestEvaluation) {
  ModelEvaluator evaluator(ModelEvaluator::Options{}, models_.get(), datasets_.get());
  UploadDataset("pets", 16);
  UploadDataset("pets-test", 8, "cats", "dogs", /*seed=*/1000);
  std::string id;
  JobManager::Options o = ReplicaOptions("a");
  o.evaluator = &evaluator;
  o.before_test_evaluation_stored = [&](const std::string& job_id, int64_t) {
    if (job_id == id) TakeOver(jobs_.get(), job_id, "taken by b");
  };
  MakeManager(o);
  kaizen::v1::StartFineTuneRequest r = Request("pets", "out", /*epochs=*/2);
  r.set_test_dataset("pets-test");
  absl::StatusOr<Job> job = manager_->Submit(r);
  ASSERT_TRUE(job.ok()) << job.status();
  id = job->id();
  ASSERT_TRUE(manager_->Start().ok());
  // One worker: the next job ends only after the first one's run stopped.
  absl::StatusOr<Job> next = manager_->Submit(Request("pets", "next"));
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(WaitForEnd(next->id()).state(), JOB_STATE_SUCCEEDED);

  const Job row = *jobs_->Get(id);
  EXPECT_EQ(row.device(), "taken by b");
  absl::StatusOr<kaizen::v1::Model> out = models_->Get("out", 0);
  ASSERT_TRUE(out.ok()) << out.status();
  for (const int64_t v : out->versions()) {
    EXPECT_FALSE(models_->Get("out", v)->has_test_evaluation()) << "version " << v;
  }
  for (const std::string& m : Messages(id)) {
    EXPECT_THAT(m, ::testing::Not(HasSubstr("test dataset pets-test"))) << m;
  }
}

// Leases are timed by the database's clock, not the replicas': replica b,
// whose clock runs 10 minutes ahead, leaves alone the job replica a holds
// under a live lease, and runs its own jobs under leases that last.
TEST_F(JobManagerTest, AReplicaWhoseClockRunsAheadTakesNoLiveJobOver) {
  UploadDataset("pets");
  JobManager::Options o = ReplicaOptions("b");
  o.clock = [] { return absl::Now() + absl::Minutes(10); };
  MakeManager(o);
  absl::StatusOr<Job> job = manager_->Submit(Request("pets", "out"));
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_TRUE(jobs_->ClaimNext("a", absl::ToUnixMillis(absl::Now()), 60000)->has_value());
  absl::StatusOr<Job> next = manager_->Submit(Request("pets", "next", /*epochs=*/2));
  ASSERT_TRUE(next.ok()) << next.status();

  ASSERT_TRUE(manager_->Start().ok());
  EXPECT_EQ(WaitForEnd(next->id()).state(), JOB_STATE_SUCCEEDED);
  EXPECT_EQ(jobs_->Get(job->id())->attempts(), 0);  // b never ran it
  absl::StatusOr<std::optional<std::string>> holder =
      jobs_->RequestOfLeaseHolder(job->id(), "", absl::ToUnixMillis(absl::Now()));
  ASSERT_TRUE(holder.ok()) << holder.status();
  EXPECT_EQ(holder->value_or("none"), "a");
  EXPECT_THAT(Messages(job->id()), ::testing::Not(::testing::Contains(HasSubstr("takes it over"))));
}

// A Submit that stopped between inserting its job and queueing it (its
// replica died) leaves the row held, nobody's to claim, holding its output
// name: with a shared database a replica queues it once it has seen it held
// for Options::abandoned_submission by its own monotonic clock (whatever the
// row's create_time, an hour old here, says), and it runs.
TEST_F(JobManagerTest, AnAbandonedSubmissionIsQueuedByAnotherReplica) {
  UploadDataset("pets");
  JobManager::Options o = ReplicaOptions("b");
  o.job_lease = absl::Seconds(3);  // renewals every second
  o.abandoned_submission = absl::Seconds(2);
  MakeManager(o);  // not started: the job stays queued
  absl::StatusOr<Job> job = manager_->Submit(Request("pets", "out"));
  ASSERT_TRUE(job.ok()) << job.status();
  // Back to held, as if its Submit had stopped before queueing it.
  Job held = *job;
  held.set_state(kaizen::v1::JOB_STATE_UNSPECIFIED);
  *held.mutable_create_time() = google::protobuf::util::TimeUtil::MillisecondsToTimestamp(
      absl::ToUnixMillis(absl::Now() - absl::Hours(1)));
  ASSERT_TRUE(jobs_->Update(held).ok());
  const absl::Time started = absl::Now();
  ASSERT_TRUE(manager_->Start().ok());
  const Job end = WaitForEnd(job->id());
  EXPECT_EQ(end.state(), JOB_STATE_SUCCEEDED) << end.error();
  auto events = jobs_->Events(job->id(), 0);
  ASSERT_TRUE(events.ok()) << events.status();
  bool told = false;
  for (const kaizen::v1::JobEvent& e : *events) {
    if (!absl::StrContains(e.message(), "stopped before queueing it")) continue;
    told = true;
    EXPECT_THAT(e.message(), HasSubstr("(its replica died or lost the database); replica b "
                                       "queued it"));
    // Not before this replica had seen it held for the configured time.
    EXPECT_GE(google::protobuf::util::TimeUtil::TimestampToMilliseconds(e.time()),
              absl::ToUnixMillis(started + absl::Seconds(2)));
  }
  EXPECT_TRUE(told);
}

// A Submit that stopped before queueing its job leaves the row held; a
// retry with the same request_id queues it instead of answering a job that
// would never run.
TEST_F(JobManagerTest, ARetryOfAnInterruptedSubmissionQueuesIt) {
  UploadDataset("pets");
  MakeManager();  // not started: the job stays queued
  kaizen::v1::StartFineTuneRequest r = Request("pets", "out");
  r.set_request_id("retry-me");
  absl::StatusOr<Job> first = manager_->Submit(r);
  ASSERT_TRUE(first.ok()) << first.status();
  Job held = *first;
  held.set_state(kaizen::v1::JOB_STATE_UNSPECIFIED);
  ASSERT_TRUE(jobs_->Update(held).ok());
  ASSERT_TRUE(jobs_->InStates({kaizen::v1::JOB_STATE_QUEUED})->empty());
  absl::StatusOr<Job> retried = manager_->Submit(r);
  ASSERT_TRUE(retried.ok()) << retried.status();
  EXPECT_EQ(retried->id(), first->id());
  EXPECT_EQ(retried->state(), JOB_STATE_QUEUED);
  EXPECT_EQ(jobs_->InStates({kaizen::v1::JOB_STATE_QUEUED})->size(), 1u);
  // A second retry changes nothing.
  ASSERT_TRUE(manager_->Submit(r).ok());
  EXPECT_EQ(States(first->id()), (StateList{JOB_STATE_QUEUED, JOB_STATE_QUEUED}));
}

// A client's retry that arrives while its first StartFineTune is still
// being checked gets the same job, not a refusal of the output name the
// first one reserved: rounds of two concurrent Submits of one request_id.
TEST_F(JobManagerTest, ConcurrentSubmitsOfOneRequestIdGetOneJob) {
  UploadDataset("pets");
  MakeManager();  // not started: the jobs stay queued
  constexpr int kRounds = 30;
  for (int round = 0; round < kRounds; ++round) {
    kaizen::v1::StartFineTuneRequest r = Request("pets", absl::StrCat("out-", round));
    r.set_request_id(absl::StrCat("retried-", round));
    std::promise<void> go;
    std::shared_future<void> started = go.get_future().share();
    auto submit = [&] {
      started.wait();
      return manager_->Submit(r);
    };
    std::future<absl::StatusOr<Job>> first = std::async(std::launch::async, submit);
    std::future<absl::StatusOr<Job>> second = std::async(std::launch::async, submit);
    go.set_value();
    const absl::StatusOr<Job> a = first.get();
    const absl::StatusOr<Job> b = second.get();
    ASSERT_TRUE(a.ok()) << "round " << round << ": " << a.status();
    ASSERT_TRUE(b.ok()) << "round " << round << ": " << b.status();
    EXPECT_EQ(a->id(), b->id());
  }
  EXPECT_EQ(jobs_->InStates({kaizen::v1::JOB_STATE_QUEUED})->size(), size_t{kRounds});
}

// A job submitted through replica a and ended through another replica (run
// there, or cancelled) frees its output name on a too: a's own reservation
// goes at its next renewal, and an upload into the name through a is
// accepted instead of refused until a restarts.
TEST_F(JobManagerTest, AJobThatEndedOnAnotherReplicaFreesItsOutputNameHere) {
  UploadDataset("pets");
  JobManager::Options o = ReplicaOptions("a");
  o.workers = 0;                   // a runs nothing: another replica runs the job
  o.job_lease = absl::Seconds(3);  // renewals every second
  MakeManager(o);
  ASSERT_TRUE(manager_->Start().ok());
  absl::StatusOr<Job> job = manager_->Submit(Request("pets", "theirs"));
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_TRUE(NameIsHeld("theirs"));
  Job ended = *jobs_->Get(job->id());  // what the other replica records
  ended.set_state(JOB_STATE_SUCCEEDED);
  ASSERT_TRUE(jobs_->Update(ended).ok());
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (NameIsHeld("theirs") && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(100));
  EXPECT_FALSE(NameIsHeld("theirs"));
}

// Leases follow the database's clock and the monotonic time since its last
// reading: replica a's clock, stepped 10 minutes ahead (an NTP correction,
// an operator) between a reading and the renewal that follows, does not
// make a's own lease look expired, so a keeps its job and finishes it in
// one attempt. (Timed by this machine's clock, the renewal would find the
// lease run out and the job, lost, would fail: one attempt allowed.)
TEST_F(JobManagerTest, AClockSteppedAheadCostsTheReplicaNoJob) {
  UploadDataset("pets");
  std::string id;
  std::atomic<bool> running{false};
  std::atomic<bool> stepped{false};
  JobManager::Options o = ReplicaOptions("a");
  o.job_lease = absl::Seconds(3);  // renewals every second
  o.max_job_attempts = 1;
  o.clock = [&] { return absl::Now() + (stepped ? absl::Minutes(10) : absl::ZeroDuration()); };
  o.before_lease_renewal = [&] {
    if (running) stepped = true;
  };
  o.after_step = [&](const std::string& job_id, int64_t step) {
    if (job_id != id || step != 1) return;
    running = true;
    // A renewal comes (and steps the clock) while the run goes on.
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (!stepped && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(10));
    absl::SleepFor(absl::Seconds(2));
  };
  MakeManager(o);
  absl::StatusOr<Job> job = manager_->Submit(Request("pets", "out", /*epochs=*/2));
  ASSERT_TRUE(job.ok()) << job.status();
  id = job->id();
  ASSERT_TRUE(manager_->Start().ok());
  const Job end = WaitForEnd(id);
  EXPECT_EQ(end.state(), JOB_STATE_SUCCEEDED) << end.error();
  EXPECT_EQ(end.attempts(), 1);
  EXPECT_EQ(end.latest_version(), 2);
  EXPECT_TRUE(stepped);
}

// And replica b, whose clock runs 10 minutes behind, still takes over the job
// of replica a, whose lease ran out two minutes ago.
TEST_F(JobManagerTest, AReplicaWhoseClockRunsBehindStillTakesOverADeadReplicasJob) {
  UploadDataset("pets");
  absl::StatusOr<Job> job = JobOfADeadReplica();
  ASSERT_TRUE(job.ok()) << job.status();
  JobManager::Options o = ReplicaOptions("b");
  o.clock = [] { return absl::Now() - absl::Minutes(10); };
  MakeManager(o);

  ASSERT_TRUE(manager_->Start().ok());
  const Job end = WaitForEnd(job->id());
  EXPECT_EQ(end.state(), JOB_STATE_SUCCEEDED) << end.error();
  EXPECT_THAT(Messages(job->id()),
              ::testing::Contains(HasSubstr("replica a stopped renewing its lease on this job; "
                                            "replica b takes it over")));
}

}  // namespace
}  // namespace kaizen::jobs
