#include "client/cli/dataset_source.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>

#include "client/cli/usage.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class DatasetSourceTest : public ::testing::Test {
 protected:
  std::string Touch(const std::string& name) {
    const std::string path = dir_.File(name);
    std::ofstream(path) << "x";
    return path;
  }
  test_util::TempDir dir_;
};

TEST_F(DatasetSourceTest, AFolderIsArchivedOnTheFly) {
  ASSERT_EQ(::mkdir(dir_.File("photos").c_str(), 0755), 0);
  absl::StatusOr<DatasetSource> s = ResolveDatasetSource(dir_.File("photos"), "auto", "");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->format, kaizen::v1::DATASET_FORMAT_IMAGE_FOLDER);
  EXPECT_EQ(s->folder, dir_.File("photos"));
  EXPECT_TRUE(s->files.empty());
  // A folder is never IDX, and --labels makes no sense for it.
  EXPECT_TRUE(IsUsageError(ResolveDatasetSource(dir_.File("photos"), "idx", "").status()));
  EXPECT_TRUE(IsUsageError(ResolveDatasetSource(dir_.File("photos"), "auto", "l").status()));
}

TEST_F(DatasetSourceTest, AnIdxImagesFileFindsItsLabelsBesideIt) {
  const std::string images = Touch("train-images-idx3-ubyte.gz");
  const std::string labels = Touch("train-labels-idx1-ubyte.gz");
  absl::StatusOr<DatasetSource> s = ResolveDatasetSource(images, "auto", "");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->format, kaizen::v1::DATASET_FORMAT_IDX);
  EXPECT_THAT(s->files, ElementsAre(images, labels));
}

TEST_F(DatasetSourceTest, LabelsOfTheOtherCompressionAreFoundToo) {
  const std::string images = Touch("t10k-images-idx3-ubyte");
  const std::string labels = Touch("t10k-labels-idx1-ubyte.gz");
  absl::StatusOr<DatasetSource> s = ResolveDatasetSource(images, "auto", "");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_THAT(s->files, ElementsAre(images, labels));
}

TEST_F(DatasetSourceTest, MissingLabelsAreNamed) {
  const std::string images = Touch("train-images-idx3-ubyte");
  absl::StatusOr<DatasetSource> s = ResolveDatasetSource(images, "auto", "");
  ASSERT_EQ(s.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.status().message(), HasSubstr("train-labels-idx1-ubyte"));
  EXPECT_THAT(s.status().message(), HasSubstr("--labels=FILE"));
  s = ResolveDatasetSource(images, "auto", dir_.File("nope"));
  ASSERT_EQ(s.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.status().message(), HasSubstr(dir_.File("nope")));
}

TEST_F(DatasetSourceTest, ArchivesGoAsTheyAreAndUnknownNamesNeedAFormat) {
  const std::string tgz = Touch("photos.TGZ");
  absl::StatusOr<DatasetSource> s = ResolveDatasetSource(tgz, "auto", "");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->format, kaizen::v1::DATASET_FORMAT_IMAGE_FOLDER);
  EXPECT_THAT(s->files, ElementsAre(tgz));
  const std::string odd = Touch("photos.bin");
  absl::StatusOr<DatasetSource> unknown = ResolveDatasetSource(odd, "auto", "");
  ASSERT_TRUE(IsUsageError(unknown.status()));
  EXPECT_THAT(unknown.status().message(), HasSubstr("--format=folder"));
  absl::StatusOr<DatasetSource> forced = ResolveDatasetSource(odd, "folder", "");
  ASSERT_TRUE(forced.ok()) << forced.status();
  EXPECT_THAT(forced->files, ElementsAre(odd));
}

TEST_F(DatasetSourceTest, BadFormatsAndMissingPathsAreRefused) {
  EXPECT_TRUE(IsUsageError(ResolveDatasetSource(dir_.path(), "csv", "").status()));
  EXPECT_EQ(ResolveDatasetSource(dir_.File("absent"), "auto", "").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(IsArchiveNameTest, KnownExtensionsInAnyCase) {
  for (const char* name :
       {"a.tar", "a.tar.gz", "dir/a.TGZ", "a.zip", "a.tar.bz2", "a.tbz2", "a.tar.xz", "a.txz"}) {
    EXPECT_TRUE(IsArchiveName(name)) << name;
  }
  for (const char* name : {"a.gz", "a.png", "tar", "a.tar/b"}) {
    EXPECT_FALSE(IsArchiveName(name)) << name;
  }
}

}  // namespace
}  // namespace kaizen::cli
