// End-to-end tests of STRATEGY_INCREMENTAL: real jobs on small Fashion-MNIST
// subsets through a real server. A cnn-small trained on classes 0-4 learns
// 5-7 and then 8-9, continuing its own model; the class list and the head
// grow, the rehearsal memory stays bounded and is stored with every version,
// and rehearsal with distillation forgets measurably less than neither (same
// seed). Bad requests get precise statuses, and a job killed with kill -9
// resumes with its pinned base version, which retention keeps.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/lib/kaizen_client.h"
#include "gmock/gmock.h"
#include "server/datasets/dataset_file.h"
#include "tests/test_util/server/job_helpers.h"
#include "tests/test_util/server_process.h"
#include "tests/test_util/temp_dir.h"
#include "tests/test_util/wait.h"

namespace kaizen {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using v1::Job;

// The rehearsal memories stored beside the versions of `model` under the
// data folder `data_dir`, by file name.
std::vector<datasets::DecodedDataset> Memories(const std::string& data_dir,
                                               const std::string& model) {
  std::vector<std::string> paths;
  for (const auto& e : std::filesystem::directory_iterator(data_dir + "/models/" + model)) {
    if (absl::EndsWith(e.path().string(), ".exemplars")) paths.push_back(e.path().string());
  }
  std::sort(paths.begin(), paths.end());
  std::vector<datasets::DecodedDataset> out;
  for (const std::string& p : paths) {
    absl::StatusOr<datasets::DecodedDataset> d = datasets::ReadDatasetFile(p);
    if (absl::IsNotFound(d.status())) continue;  // pruned meanwhile
    EXPECT_TRUE(d.ok()) << p << ": " << d.status();
    if (d.ok()) out.push_back(*std::move(d));
  }
  return out;
}

std::vector<int64_t> PerClass(const datasets::DecodedDataset& d) {
  std::vector<int64_t> n(d.class_names.size(), 0);
  for (const auto& r : d.records) ++n[r.label];
  return n;
}

class IncrementalE2EBase : public test_util::JobServerTest {
 protected:
  // cnn-small from scratch on `dataset` into `output`.
  static v1::StartFineTuneRequest Base(const std::string& dataset, const std::string& output,
                                       int epochs) {
    v1::StartFineTuneRequest r =
        Request("cnn-small", dataset, output, v1::STRATEGY_SCRATCH, epochs);
    r.mutable_hyperparameters()->set_batch_size(16);
    return r;
  }

  static v1::StartFineTuneRequest Incremental(const std::string& base, const std::string& dataset,
                                              const std::string& output, int epochs) {
    v1::StartFineTuneRequest r = Request(base, dataset, output, v1::STRATEGY_INCREMENTAL, epochs);
    r.mutable_hyperparameters()->set_batch_size(16);
    r.mutable_incremental()->set_exemplars_per_class(10);
    return r;
  }
};

class IncrementalE2E : public IncrementalE2EBase {
 protected:
  void SetUp() override { StartServer(); }
};

// A server process of its own, to kill.
class IncrementalRestartE2E : public IncrementalE2EBase {};

TEST_F(IncrementalE2E, ThreeStepsGrowTheModelAndTheProtectionsReduceForgetting) {
  UploadSubset("old", {0, 1, 2, 3, 4}, 30);
  UploadSubset("mid", {5, 6, 7}, 30);
  UploadSubset("last", {8, 9}, 30);
  UploadSubset("test8", {0, 1, 2, 3, 4, 5, 6, 7}, 30, 0, "t10k");
  UploadSubset("test10", {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 30, 0, "t10k");
  const Job base = WaitForSuccess(Start(Base("old", "fm", 10)).id());
  ASSERT_EQ(base.state(), v1::JOB_STATE_SUCCEEDED) << base.error();

  // +5-7 into the same model, protected; and into another, unprotected.
  v1::StartFineTuneRequest on = Incremental("fm", "mid", "fm", 6);
  on.set_test_dataset("test8");
  v1::StartFineTuneRequest off =
      Incremental(absl::StrCat("fm:", base.latest_version()), "mid", "fm-off", 6);
  off.set_test_dataset("test8");
  off.mutable_incremental()->set_disable_rehearsal(true);
  off.mutable_incremental()->set_disable_distillation(true);
  const Job step1 = WaitForSuccess(Start(on).id());
  const Job step1_off = WaitForSuccess(Start(off).id());
  ASSERT_EQ(step1.state(), v1::JOB_STATE_SUCCEEDED) << step1.error();
  ASSERT_EQ(step1_off.state(), v1::JOB_STATE_SUCCEEDED) << step1_off.error();

  const v1::IncrementalResult& r1 = step1.incremental();
  EXPECT_EQ(r1.base_model(), "fm");
  EXPECT_EQ(r1.base_version(), base.latest_version());
  EXPECT_EQ(r1.old_classes_size(), 5);
  EXPECT_THAT(r1.new_classes(), ElementsAre("class5", "class6", "class7"));
  EXPECT_TRUE(r1.rehearsal());
  EXPECT_TRUE(r1.distillation());
  EXPECT_EQ(r1.memory_source(), "datasets old");
  EXPECT_EQ(r1.memory_size(), 80);  // 10 per class of 8
  EXPECT_EQ(r1.evaluated_on(), "test dataset test8");
  EXPECT_EQ(r1.old_examples(), 150);
  EXPECT_EQ(r1.new_examples(), 90);
  EXPECT_DOUBLE_EQ(r1.new_accuracy_before(), 0);
  EXPECT_GT(r1.old_accuracy_before(), 0.5);
  EXPECT_GT(r1.new_accuracy_after(), 0.3);
  EXPECT_DOUBLE_EQ(r1.forgetting(), r1.old_accuracy_before() - r1.old_accuracy_after());
  // The epoch summaries split validation accuracy into old and new classes;
  // the new data's validation images are all of new classes.
  ASSERT_FALSE(step1.history().empty());
  EXPECT_EQ(step1.history().rbegin()->old_class_examples(), 0);
  EXPECT_EQ(step1.history().rbegin()->new_class_examples(), 18);
  // The model continues: its new versions have the merged class list.
  absl::StatusOr<v1::Model> v = s_.client->GetModel("fm", step1.latest_version());
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_THAT(v->class_names(), ElementsAre("class0", "class1", "class2", "class3", "class4",
                                            "class5", "class6", "class7"));
  EXPECT_EQ(v->head().out_features(), 8);

  const v1::IncrementalResult& r0 = step1_off.incremental();
  EXPECT_FALSE(r0.rehearsal());
  EXPECT_EQ(r0.memory_size(), 0);
  EXPECT_DOUBLE_EQ(r0.old_accuracy_before(), r1.old_accuracy_before());
  std::printf(
      "incremental +5-7 on %lld old-class test images: old-class accuracy %.1f%% before; after "
      "with rehearsal and distillation %.1f%% (forgetting %.1f points), without %.1f%% "
      "(forgetting %.1f points); new classes %.1f%% / %.1f%%\n",
      static_cast<long long>(r1.old_examples()), 100 * r1.old_accuracy_before(),
      100 * r1.old_accuracy_after(), 100 * r1.forgetting(), 100 * r0.old_accuracy_after(),
      100 * r0.forgetting(), 100 * r1.new_accuracy_after(), 100 * r0.new_accuracy_after());
  EXPECT_GT(r0.forgetting(), r1.forgetting() + 0.15);

  // +8-9 from the memory stored with the last version, a smaller bound.
  v1::StartFineTuneRequest next = Incremental("fm", "last", "fm", 6);
  next.set_test_dataset("test10");
  next.mutable_incremental()->set_max_exemplars(60);
  const Job step2 = WaitForSuccess(Start(next).id());
  ASSERT_EQ(step2.state(), v1::JOB_STATE_SUCCEEDED) << step2.error();
  const v1::IncrementalResult& r2 = step2.incremental();
  EXPECT_EQ(r2.base_version(), step1.latest_version());
  EXPECT_EQ(r2.memory_source(), absl::StrCat("the memory of fm:", step1.latest_version()));
  EXPECT_EQ(r2.old_classes_size(), 8);
  EXPECT_THAT(r2.new_classes(), ElementsAre("class8", "class9"));
  EXPECT_EQ(r2.memory_size(), 60);  // min(10, 60 / 10) per class
  EXPECT_EQ(r2.old_examples(), 240);
  std::printf("incremental +8-9: old-class accuracy %.1f%% -> %.1f%%, new %.1f%%, all %.1f%%\n",
              100 * r2.old_accuracy_before(), 100 * r2.old_accuracy_after(),
              100 * r2.new_accuracy_after(), 100 * r2.all_accuracy_after());

  // Every version an INCREMENTAL job wrote has its memory beside it: the
  // ones of the first step 8 classes x 10, of the second 10 x 6.
  int eight = 0, ten = 0;
  for (const datasets::DecodedDataset& m : Memories(data_.path(), "fm")) {
    if (m.class_names.size() == 8) {
      ++eight;
      EXPECT_EQ(PerClass(m), std::vector<int64_t>(8, 10));
    } else {
      ++ten;
      ASSERT_EQ(m.class_names.size(), 10u);
      EXPECT_EQ(PerClass(m), std::vector<int64_t>(10, 6));
    }
  }
  EXPECT_GE(eight, 1);
  EXPECT_GE(ten, 1);
  // Without rehearsal no memory is stored.
  EXPECT_TRUE(Memories(data_.path(), "fm-off").empty());

  const std::vector<std::string> lines = Messages(Watch(step1.id()));
  EXPECT_EQ(Count(lines, absl::StrCat("incremental: continuing fm:", base.latest_version())), 1);
  EXPECT_EQ(Count(lines, "rehearsal: 50 exemplars of 5 old classes replayed"), 1);
  EXPECT_EQ(Count(lines, "incremental: test dataset test8:"), 1);
}

TEST_F(IncrementalE2E, BadRequestsGetPreciseStatuses) {
  UploadSubset("old", {0, 1}, 8);
  UploadSubset("new", {1, 2}, 8);
  UploadSubset("gone", {0, 1}, 8);
  WaitForSuccess(Start(Base("old", "small", 1)).id());
  WaitForSuccess(Start(Base("gone", "orphan", 1)).id());
  ASSERT_TRUE(s_.client->DeleteDataset("gone").ok());

  struct Case {
    v1::StartFineTuneRequest request;
    absl::StatusCode code;
    std::string message;
  };
  std::vector<Case> cases;
  cases.push_back({Incremental("cnn-small", "new", "x", 1), absl::StatusCode::kFailedPrecondition,
                   "base_model \"cnn-small\" is a built-in architecture with random weights and "
                   "has no class names"});
  cases.push_back(
      {Incremental("nope", "new", "x", 1), absl::StatusCode::kNotFound, "base_model: model"});
  cases.push_back({Incremental("small:9", "new", "x", 1), absl::StatusCode::kNotFound,
                   "base_model: model \"small\""});
  cases.push_back({Incremental("orphan", "new", "x", 1), absl::StatusCode::kFailedPrecondition,
                   "base_model \"orphan:1\" has no rehearsal memory (no INCREMENTAL job wrote it) "
                   "and its training images cannot be found: the dataset it was trained on, "
                   "\"gone\", is gone; name the datasets it was trained on in "
                   "incremental.previous_datasets, or set incremental.disable_rehearsal"});
  v1::StartFineTuneRequest unknown_previous = Incremental("orphan", "new", "x", 1);
  unknown_previous.mutable_incremental()->add_previous_datasets("nope");
  cases.push_back({unknown_previous, absl::StatusCode::kNotFound,
                   "incremental.previous_datasets: dataset \"nope\""});
  cases.push_back({Incremental("small", "new", "orphan", 1), absl::StatusCode::kAlreadyExists,
                   "output_model: model \"orphan\" already exists"});
  v1::StartFineTuneRequest stray = Base("new", "x", 1);
  stray.mutable_incremental()->set_exemplars_per_class(5);
  cases.push_back({stray, absl::StatusCode::kInvalidArgument,
                   "incremental is set but strategy is STRATEGY_SCRATCH; incremental options "
                   "apply to STRATEGY_INCREMENTAL only"});
  v1::StartFineTuneRequest hot = Incremental("small", "new", "x", 1);
  hot.mutable_incremental()->set_temperature(0.5);
  cases.push_back({hot, absl::StatusCode::kInvalidArgument,
                   "incremental.temperature is 0.5; it must be in [1, 100]"});
  v1::StartFineTuneRequest tiny_memory = Incremental("small", "new", "x", 1);
  tiny_memory.mutable_incremental()->set_max_exemplars(2);
  cases.push_back({tiny_memory, absl::StatusCode::kInvalidArgument,
                   "incremental.max_exemplars 2 is fewer than the 3 classes of small:1 and "
                   "dataset \"new\" together; the rehearsal memory keeps at least one exemplar "
                   "of every class"});
  v1::StartFineTuneRequest tuned = Incremental("small", "new", "x", 1);
  tuned.mutable_tuning()->set_max_trials(4);
  cases.push_back(
      {tuned, absl::StatusCode::kInvalidArgument, "STRATEGY_INCREMENTAL does not tune"});
  for (const Case& c : cases) {
    absl::StatusOr<Job> job = TryStart(c.request);
    EXPECT_EQ(job.status().code(), c.code) << job.status();
    EXPECT_THAT(std::string(job.status().message()), HasSubstr(c.message));
  }

  // Without rehearsal the orphan can be continued; the base cannot be
  // deleted while the job needs it.
  v1::StartFineTuneRequest bare = Incremental("orphan", "new", "orphan", 1);
  bare.mutable_incremental()->set_disable_rehearsal(true);
  const Job job = Start(bare);
  ASSERT_FALSE(job.id().empty());
  EXPECT_EQ(job.incremental().memory_source(), "none (rehearsal off)");
  EXPECT_EQ(s_.client->DeleteModel("orphan").code(), absl::StatusCode::kFailedPrecondition);
  const Job end = WaitForSuccess(job.id());
  EXPECT_EQ(end.incremental().memory_size(), 0);
}

// kill -9 in the middle of an INCREMENTAL job that continues its own model
// with keep_checkpoints 1: it resumes with its pinned base version (kept by
// retention meanwhile) and the same rehearsal memory.
TEST_F(IncrementalRestartE2E, AKilledJobResumesWithItsPinnedBaseAndMemory) {
  test_util::TempDir dir;
  const int port = test_util::FreeLoopbackPort();
  auto server = std::make_unique<test_util::ServerProcess>(KAIZEN_BINARY_DIR, dir.path(), port);
  ASSERT_TRUE(Connect(port));
  UploadSubset("old", {0, 1, 2}, 12);
  UploadSubset("new", {3, 4}, 15);
  const Job base = WaitForSuccess(Start(Base("old", "fm", 2)).id());
  ASSERT_EQ(base.state(), v1::JOB_STATE_SUCCEEDED) << base.error();
  const int64_t pinned = base.latest_version();

  v1::StartFineTuneRequest r = Incremental("fm", "new", "fm", 8);
  r.set_keep_checkpoints(1);
  r.mutable_hyperparameters()->mutable_augmentation()->set_enabled(true);
  r.mutable_hyperparameters()->mutable_augmentation()->set_random_crop_padding(2);
  const Job submitted = Start(r);
  ASSERT_EQ(submitted.incremental().base_version(), pinned);
  const std::string id = submitted.id();
  ASSERT_TRUE(test_util::WaitUntil([&] { return GetJob(id).latest_version() > pinned + 1; },
                                   absl::Minutes(3)));
  const std::vector<datasets::DecodedDataset> before = Memories(dir.path(), "fm");
  server->Kill(SIGKILL);

  server = std::make_unique<test_util::ServerProcess>(KAIZEN_BINARY_DIR, dir.path(), port);
  ASSERT_TRUE(Connect(port));
  const Job end = WaitForState(id, {v1::JOB_STATE_SUCCEEDED, v1::JOB_STATE_FAILED});
  const std::vector<std::string> lines = Messages(Watch(id));
  ASSERT_EQ(end.state(), v1::JOB_STATE_SUCCEEDED) << end.error();
  EXPECT_EQ(end.attempts(), 2);
  EXPECT_EQ(end.history_size(), 8);
  EXPECT_EQ(end.incremental().base_version(), pinned);
  EXPECT_EQ(Count(lines, "the base was reloaded to resume"), 1);
  // Retention (keep 1) kept the pinned base beside the latest version.
  EXPECT_TRUE(s_.client->GetModel("fm", pinned).ok());
  // The memory after the restart is the one before it, byte for byte.
  const std::vector<datasets::DecodedDataset> after = Memories(dir.path(), "fm");
  server.reset();
  ASSERT_FALSE(before.empty());
  ASSERT_FALSE(after.empty());
  EXPECT_EQ(after.back().pixels, before.front().pixels);
  EXPECT_EQ(PerClass(after.back()), std::vector<int64_t>(5, 10));
}

}  // namespace
}  // namespace kaizen
