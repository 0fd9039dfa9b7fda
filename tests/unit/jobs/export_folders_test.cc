#include "server/jobs/export_folders.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "server/common/atomic_file.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::jobs {
namespace {

// An export folder as ExportJob leaves it: a model, settings, and a hard
// link to a record file that the dataset store also holds; its mtime set.
void MakeExport(const std::string& exports, const std::string& folder, const std::string& record,
                int64_t model_bytes, time_t mtime) {
  const std::string dir = exports + "/" + folder;
  ASSERT_TRUE(std::filesystem::create_directories(dir + "/out"));
  ASSERT_TRUE(common::WriteFileAtomically(dir + "/base.pt", std::string(model_bytes, 'm')).ok());
  ASSERT_TRUE(common::WriteFileAtomically(dir + "/spec.json", "{}").ok());
  ASSERT_EQ(::link(record.c_str(), (dir + "/train.rec").c_str()), 0);
  const timeval times[2] = {{mtime, 0}, {mtime, 0}};
  ASSERT_EQ(::utimes(dir.c_str(), times), 0);
}

TEST(ExportFoldersTest, NamesAreAnExportsFolderOrRefused) {
  EXPECT_EQ(*ExportFolderName("exports/ft-0123456789ab-a1b2c3"), "ft-0123456789ab-a1b2c3");
  EXPECT_EQ(*ExportFolderName("ft-0123456789ab-a1b2c3"), "ft-0123456789ab-a1b2c3");
  for (const char* bad : {"", "exports/", "a1b2c3", "-a1b2c3", "ft-x-A1B2C3", "ft-x-a1b2c",
                          "ft-x_a1b2c3", "../models-a1b2c3", "exports/../x-a1b2c3", "ft/x-a1b2c3",
                          ".ft-a1b2c3x", "ft-x-a1b2c3/", "exports/exports/ft-x-a1b2c3"}) {
    const absl::StatusOr<std::string> name = ExportFolderName(bad);
    ASSERT_FALSE(name.ok()) << bad;
    EXPECT_EQ(name.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(name.status().message().find("not an export's folder"), std::string::npos);
  }
  EXPECT_FALSE(ExportFolderName(std::string(194, 'a') + "-a1b2c3").ok());  // 201 characters
  EXPECT_TRUE(ExportFolderName(std::string(193, 'a') + "-a1b2c3").ok());
}

TEST(ExportFoldersTest, ListsNewestFirstWithWhatDeletingEachWouldFree) {
  test_util::TempDir dir;
  const std::string exports = dir.path() + "/exports";
  EXPECT_TRUE(ListExportFolders(exports)->empty());  // none yet
  EXPECT_EQ(*CountExportFolders(exports), 0);
  const std::string record = dir.path() + "/train.rec";
  ASSERT_TRUE(common::WriteFileAtomically(record, std::string(5000, 'r')).ok());
  const std::string gone = dir.path() + "/gone.rec";
  ASSERT_TRUE(common::WriteFileAtomically(gone, std::string(7000, 'g')).ok());
  MakeExport(exports, "ft-000000000001-aaaaaa", record, 100, 1'000'000);
  MakeExport(exports, "ft-000000000002-bbbbbb", record, 200, 3'000'000);
  MakeExport(exports, "ft-000000000001-cccccc", gone, 300, 2'000'000);
  // The dataset of gone.rec was deleted: the export's link is its last.
  ASSERT_EQ(::unlink(gone.c_str()), 0);
  // Not exports: a file, a link to a folder, a folder of another name.
  ASSERT_TRUE(common::WriteFileAtomically(exports + "/ft-000000000003-dddddd", "x").ok());
  std::filesystem::create_directory_symlink(exports + "/ft-000000000002-bbbbbb",
                                            exports + "/ft-000000000004-eeeeee");
  std::filesystem::create_directory(exports + "/notes");

  const absl::StatusOr<std::vector<ExportFolder>> all = ListExportFolders(exports);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].folder, "ft-000000000002-bbbbbb");
  EXPECT_EQ((*all)[0].job_id, "ft-000000000002");
  EXPECT_EQ((*all)[0].create_time, absl::FromTimeT(3'000'000));
  EXPECT_EQ((*all)[0].size_bytes, 200 + 2);  // the model and spec.json, not the live record
  EXPECT_EQ((*all)[1].folder, "ft-000000000001-cccccc");
  EXPECT_EQ((*all)[1].size_bytes, 300 + 2 + 7000);  // and the deleted dataset's record
  EXPECT_EQ((*all)[2].folder, "ft-000000000001-aaaaaa");
  EXPECT_EQ(*CountExportFolders(exports), 3);
  const absl::StatusOr<std::vector<ExportFolder>> one =
      ListExportFolders(exports, "ft-000000000001");
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_EQ(one->size(), 2u);
  EXPECT_EQ((*one)[0].folder, "ft-000000000001-cccccc");
  EXPECT_TRUE(ListExportFolders(exports, "ft-00000000000")->empty());
}

TEST(ExportFoldersTest, DeletingMovesTheFolderAwayThenRemovesIt) {
  test_util::TempDir dir;
  const std::string exports = dir.path() + "/exports";
  const std::string scratch = dir.path() + "/tmp";
  ASSERT_TRUE(std::filesystem::create_directories(scratch));
  const std::string record = dir.path() + "/train.rec";
  ASSERT_TRUE(common::WriteFileAtomically(record, std::string(5000, 'r')).ok());
  MakeExport(exports, "ft-000000000001-aaaaaa", record, 100, 1'000'000);
  MakeExport(exports, "ft-000000000002-bbbbbb", record, 100, 1'000'000);

  ASSERT_TRUE(DeleteExportFolder(exports, scratch, "exports/ft-000000000001-aaaaaa").ok());
  EXPECT_FALSE(std::filesystem::exists(exports + "/ft-000000000001-aaaaaa"));
  EXPECT_TRUE(std::filesystem::is_empty(scratch));
  // The record its link pointed at is the dataset's, untouched.
  struct stat st;
  ASSERT_EQ(::stat(record.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 5000);
  EXPECT_EQ(st.st_nlink, 2u);  // and the other export's link
  EXPECT_EQ(DeleteExportFolder(exports, scratch, "ft-000000000001-aaaaaa").code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(DeleteExportFolder(exports, scratch, "../tmp").code(),
            absl::StatusCode::kInvalidArgument);
  // A link named as an export is not followed into its target.
  std::filesystem::create_directory_symlink(exports + "/ft-000000000002-bbbbbb",
                                            exports + "/ft-000000000003-cccccc");
  EXPECT_EQ(DeleteExportFolder(exports, scratch, "ft-000000000003-cccccc").code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(std::filesystem::exists(exports + "/ft-000000000002-bbbbbb/base.pt"));
  ASSERT_TRUE(DeleteExportFolder(exports, scratch, "ft-000000000002-bbbbbb").ok());
  EXPECT_EQ(*CountExportFolders(exports), 0);
}

}  // namespace
}  // namespace kaizen::jobs
