// ModelEvaluator on the real stores (SQLite in a temporary directory): a
// stored version evaluated on an uploaded dataset, the refusals with their
// fields, the limits on size and concurrency, and cancellation.
#include "server/jobs/model_evaluator.h"

#include <atomic>
#include <future>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/common/sha256.h"
#include "server/store/data_dir.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::jobs {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Always answers "cats": logits (1, 0) for every image.
torch::jit::Module AlwaysCats() {
  torch::jit::Module m("AlwaysCats");
  m.define(R"(
def forward(self, x):
    return torch.stack([torch.ones([x.size(0)]), torch.zeros([x.size(0)])], dim=1)
)");
  return m;
}

class ModelEvaluatorTest : public ::testing::Test {
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
    UploadPets("pets", 8);
    kaizen::v1::Model meta;
    meta.set_source(kaizen::v1::MODEL_SOURCE_FINE_TUNED);
    for (int64_t d : {3, 16, 16}) meta.add_input_shape(d);
    meta.add_class_names("cats");
    meta.add_class_names("dogs");
    meta.mutable_head()->set_out_features(2);
    auto added = models_->AddVersion("cat-lover", AlwaysCats(), meta, "");
    ASSERT_TRUE(added.ok()) << added.status();
  }

  // `images` PNGs, half cats, half dogs.
  void UploadPets(const std::string& name, int images) {
    std::vector<test_util::ArchiveEntry> entries;
    for (int i = 0; i < images; ++i) {
      entries.push_back(
          {absl::StrCat(i % 2 ? "cats/" : "dogs/", i, ".png"), test_util::EncodePng(16, 16, 3, i)});
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
    ASSERT_TRUE((*upload)->Finish(common::Sha256Hex(archive)).ok());
  }

  ModelEvaluator MakeEvaluator(ModelEvaluator::Options o = {}) {
    return ModelEvaluator(o, models_.get(), datasets_.get());
  }

  static kaizen::v1::EvaluateModelRequest Request(const std::string& name,
                                                  const std::string& dataset) {
    kaizen::v1::EvaluateModelRequest r;
    r.set_name(name);
    r.set_dataset(dataset);
    return r;
  }

  test_util::TempDir dir_;
  std::unique_ptr<store::MetadataStore> metadata_;
  std::unique_ptr<store::DatasetStore> datasets_;
  std::unique_ptr<store::ModelStore> models_;
};

TEST_F(ModelEvaluatorTest, EvaluatesTheNewestVersionOnAStoredDataset) {
  ModelEvaluator evaluator = MakeEvaluator();
  auto e = evaluator.Evaluate(Request("cat-lover", "pets"), nullptr);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->model(), "cat-lover");
  EXPECT_EQ(e->version(), 1);
  EXPECT_EQ(e->dataset(), "pets");
  EXPECT_EQ(e->examples(), 8);
  EXPECT_DOUBLE_EQ(e->accuracy(), 0.5);
  EXPECT_DOUBLE_EQ(e->top_k_accuracy(), 1.0) << "top-5 capped at 2 classes";
  EXPECT_THAT(e->confusion(), ElementsAre(4, 0, 4, 0));
  EXPECT_TRUE(e->has_create_time());
  EXPECT_EQ(evaluator.running(), 0);
}

TEST_F(ModelEvaluatorTest, RefusesWithTheFieldAtFault) {
  ModelEvaluator evaluator = MakeEvaluator();
  struct Case {
    kaizen::v1::EvaluateModelRequest request;
    absl::StatusCode code;
    std::string needle;
  };
  std::vector<Case> cases;
  cases.push_back({Request("", "pets"), absl::StatusCode::kInvalidArgument, "name is empty"});
  cases.push_back({Request("cat-lover", ""), absl::StatusCode::kInvalidArgument, "dataset"});
  cases.push_back({Request("nope", "pets"), absl::StatusCode::kNotFound, "name:"});
  cases.push_back({Request("cat-lover", "nope"), absl::StatusCode::kNotFound, "dataset:"});
  cases.push_back(
      {Request("cnn-small", "pets"), absl::StatusCode::kFailedPrecondition, "random weights"});
  auto version = Request("cat-lover", "pets");
  version.set_version(7);
  cases.push_back({version, absl::StatusCode::kNotFound, "no version 7"});
  auto top_k = Request("cat-lover", "pets");
  top_k.set_top_k(-1);
  cases.push_back({top_k, absl::StatusCode::kInvalidArgument, "top_k"});
  for (const Case& c : cases) {
    auto e = evaluator.Evaluate(c.request, nullptr);
    EXPECT_EQ(e.status().code(), c.code) << c.request.ShortDebugString() << ": " << e.status();
    EXPECT_THAT(e.status().message(), HasSubstr(c.needle));
  }
}

TEST_F(ModelEvaluatorTest, RefusesADatasetOverTheExampleBudget) {
  ModelEvaluator::Options o;
  o.max_examples = 7;
  auto e = MakeEvaluator(o).Evaluate(Request("cat-lover", "pets"), nullptr);
  EXPECT_EQ(e.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(e.status().message(), HasSubstr("has 8 examples"));
}

TEST_F(ModelEvaluatorTest, OneAtATimeRefusesCallsAndQueuesJobs) {
  ModelEvaluator::Options o;
  o.batch_size = 1;
  ModelEvaluator evaluator = MakeEvaluator(o);
  absl::Notification inside, release;
  // The first evaluation holds its turn inside its first batch check.
  auto first = std::async(std::launch::async, [&] {
    return evaluator.Evaluate(Request("cat-lover", "pets"), [&] {
      if (!inside.HasBeenNotified()) inside.Notify();
      release.WaitForNotification();
      return false;
    });
  });
  inside.WaitForNotification();
  EXPECT_EQ(evaluator.running(), 1);
  auto refused = evaluator.Evaluate(Request("cat-lover", "pets"), nullptr);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.status().message(), HasSubstr("--max_concurrent_evaluations"));
  // A job's evaluation waits for the turn instead.
  auto queued = std::async(std::launch::async, [&] {
    return evaluator.Evaluate(Request("cat-lover", "pets"), nullptr, /*wait_for_turn=*/true);
  });
  EXPECT_EQ(queued.wait_for(std::chrono::milliseconds(50)), std::future_status::timeout);
  release.Notify();
  EXPECT_TRUE(first.get().ok());
  EXPECT_TRUE(queued.get().ok());
  EXPECT_EQ(evaluator.running(), 0);
}

TEST_F(ModelEvaluatorTest, AJobWaitingForItsTurnStillStopsWhenAsked) {
  ModelEvaluator evaluator = MakeEvaluator();
  absl::Notification inside, release;
  auto first = std::async(std::launch::async, [&] {
    return evaluator.Evaluate(Request("cat-lover", "pets"), [&] {
      if (!inside.HasBeenNotified()) inside.Notify();
      release.WaitForNotification();
      return false;
    });
  });
  inside.WaitForNotification();
  std::atomic<bool> stop{false};
  auto waiting = std::async(std::launch::async, [&] {
    return evaluator.Evaluate(
        Request("cat-lover", "pets"), [&] { return stop.load(); },
        /*wait_for_turn=*/true);
  });
  stop = true;
  // Ends while the first evaluation still holds the only turn.
  const absl::StatusOr<kaizen::v1::Evaluation> stopped = waiting.get();
  EXPECT_EQ(stopped.status().code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(stopped.status().message(), HasSubstr("waiting for a turn"));
  EXPECT_EQ(evaluator.running(), 1);
  release.Notify();
  EXPECT_TRUE(first.get().ok());
}

TEST_F(ModelEvaluatorTest, AQuarantinedVersionIsNotRunAgain) {
  ASSERT_TRUE(models_->Quarantine("cat-lover", 1, "crashed the server while loading").ok());
  auto e = MakeEvaluator().Evaluate(Request("cat-lover", "pets"), nullptr);
  EXPECT_EQ(e.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(e.status().message(), HasSubstr("quarantined (crashed the server while loading)"));
}

TEST_F(ModelEvaluatorTest, ACancelledEvaluationFreesItsTurn) {
  ModelEvaluator evaluator = MakeEvaluator();
  auto e = evaluator.Evaluate(Request("cat-lover", "pets"), [] { return true; });
  EXPECT_EQ(e.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(evaluator.running(), 0);
  EXPECT_TRUE(evaluator.Evaluate(Request("cat-lover", "pets"), nullptr).ok());
}

}  // namespace
}  // namespace kaizen::jobs
