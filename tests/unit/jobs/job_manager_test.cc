// The job manager's guarantees about names, references and crash windows,
// on the real stores (SQLite in a temporary directory) and real training
// runs of the smallest built-in model.
#include "server/jobs/job_manager.h"

#include <future>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/common/sha256.h"
#include "server/store/data_dir.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::jobs {
namespace {

using kaizen::v1::Job;
using ::testing::HasSubstr;

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
  }

  void UploadDataset(const std::string& name) {
    std::vector<testing::ArchiveEntry> entries;
    for (int i = 0; i < 8; ++i) {
      entries.push_back(
          {absl::StrCat(i % 2 ? "cats/" : "dogs/", i, ".png"), testing::EncodePng(16, 16, 3, i)});
    }
    const std::string archive = testing::MakeArchive(entries, testing::ArchiveKind::kTar);
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
    for (int i = 0; i < 1200; ++i) {
      absl::StatusOr<Job> job = manager_->Get(id);
      if (job.ok() && (job->state() == kaizen::v1::JOB_STATE_SUCCEEDED ||
                       job->state() == kaizen::v1::JOB_STATE_FAILED ||
                       job->state() == kaizen::v1::JOB_STATE_CANCELLED)) {
        return *job;
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
    ADD_FAILURE() << "job " << id << " did not end";
    return Job();
  }

  testing::TempDir dir_;
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

}  // namespace
}  // namespace kaizen::jobs
