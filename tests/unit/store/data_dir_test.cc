#include "server/store/data_dir.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "server/store/metadata_store.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::store {
namespace {

namespace fs = std::filesystem;

void Touch(const std::string& path) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path) << "x";
}

TEST(DataDirTest, PrepareCreatesTheLayoutAndEmptiesTmp) {
  test_util::TempDir dir;
  const std::string root = dir.File("data");
  ASSERT_TRUE(PrepareDataDir(root).ok());
  for (const char* sub : {"/tmp", "/datasets", "/models"}) {
    EXPECT_TRUE(fs::is_directory(root + sub)) << sub;
  }
  Touch(root + "/tmp/upload-1/part");
  Touch(root + "/datasets/kept.kds");
  ASSERT_TRUE(PrepareDataDir(root).ok());
  EXPECT_TRUE(fs::is_empty(root + "/tmp"));
  EXPECT_TRUE(fs::exists(root + "/datasets/kept.kds"));
}

TEST(DataDirTest, PrepareReportsAPathThatCannotBeCreated) {
  test_util::TempDir dir;
  Touch(dir.File("file"));
  absl::Status s = PrepareDataDir(dir.File("file") + "/data");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
}

TEST(DataDirTest, SweepRemovesOnlyFilesNoRowReferences) {
  test_util::TempDir dir;
  const std::string root = dir.path();
  ASSERT_TRUE(PrepareDataDir(root).ok());
  absl::StatusOr<std::unique_ptr<MetadataStore>> metadata =
      MetadataStore::Open(root + "/kaizen.db");
  ASSERT_TRUE(metadata.ok()) << metadata.status();
  DatasetRow dataset;
  dataset.file = "datasets/live.kds";
  dataset.dataset.set_name("live");
  ASSERT_TRUE((*metadata)->InsertDataset(dataset).ok());
  ModelRow model;
  model.file = "models/m/1.pt";
  model.model.set_name("m");
  model.model.set_version(1);
  ASSERT_TRUE((*metadata)->InsertModel(model).ok());

  Touch(root + "/datasets/live.kds");
  Touch(root + "/models/m/1.pt");
  Touch(root + "/models/m/1.pt.resume");  // lives with its checkpoint
  Touch(root + "/datasets/orphan.kds");
  Touch(root + "/models/m/2.pt");
  Touch(root + "/models/m/2.pt.resume");

  absl::StatusOr<int> removed = SweepOrphanFiles(root, **metadata);
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 3);
  EXPECT_TRUE(fs::exists(root + "/datasets/live.kds"));
  EXPECT_TRUE(fs::exists(root + "/models/m/1.pt"));
  EXPECT_TRUE(fs::exists(root + "/models/m/1.pt.resume"));
  EXPECT_FALSE(fs::exists(root + "/datasets/orphan.kds"));
  EXPECT_FALSE(fs::exists(root + "/models/m/2.pt"));
  EXPECT_FALSE(fs::exists(root + "/models/m/2.pt.resume"));
  EXPECT_TRUE(fs::exists(root + "/kaizen.db"));  // outside datasets/ and models/
}

// Several replicas share the data directory: at start-up one leaves alone
// what is younger than the age given (another replica's upload in progress,
// a version whose row is about to be inserted) and cleans up the rest.
TEST(DataDirTest, WithAMinimumAgeOnlyOldLeftOversAreRemoved) {
  test_util::TempDir dir;
  const std::string root = dir.path();
  ASSERT_TRUE(PrepareDataDir(root).ok());
  Touch(root + "/tmp/young-upload/part");
  Touch(root + "/tmp/old-upload");
  Touch(root + "/models/m/young.pt");
  Touch(root + "/models/m/old.pt");
  const auto two_days_ago = fs::file_time_type::clock::now() - std::chrono::hours(48);
  fs::last_write_time(root + "/tmp/old-upload", two_days_ago);
  fs::last_write_time(root + "/models/m/old.pt", two_days_ago);
  ASSERT_TRUE(PrepareDataDir(root, absl::Hours(24)).ok());
  EXPECT_TRUE(fs::exists(root + "/tmp/young-upload/part"));
  EXPECT_FALSE(fs::exists(root + "/tmp/old-upload"));
  auto metadata = MetadataStore::Open(root + "/kaizen.db");
  ASSERT_TRUE(metadata.ok()) << metadata.status();
  absl::StatusOr<int> removed = SweepOrphanFiles(root, **metadata, absl::Hours(24));
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 1);
  EXPECT_TRUE(fs::exists(root + "/models/m/young.pt"));
  EXPECT_FALSE(fs::exists(root + "/models/m/old.pt"));
}

}  // namespace
}  // namespace kaizen::store
