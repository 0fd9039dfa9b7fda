#include "client/lib/folder_archiver.h"

#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::client {
namespace {

namespace fs = std::filesystem;

// Entry names of a tar file, in order.
std::vector<std::string> TarEntries(const std::string& path) {
  std::vector<std::string> names;
  struct archive* a = archive_read_new();
  archive_read_support_format_tar(a);
  EXPECT_EQ(archive_read_open_filename(a, path.c_str(), 10240), ARCHIVE_OK);
  struct archive_entry* entry = nullptr;
  while (archive_read_next_header(a, &entry) == ARCHIVE_OK) {
    names.push_back(archive_entry_pathname(entry));
    archive_read_data_skip(a);
  }
  archive_read_free(a);
  return names;
}

class FolderArchiverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    folder_ = root_.File("pets");
    fs::create_directories(folder_ + "/cats");
    fs::create_directories(folder_ + "/dogs");
    test_util::WriteBinaryFile(folder_ + "/cats/a.jpg", "cat");
    test_util::WriteBinaryFile(folder_ + "/dogs/b.jpg", "dog");
    // A file the folder must not be able to leak.
    test_util::WriteBinaryFile(outside_.File("secret.jpg"), "secret");
  }

  test_util::TempDir root_;
  test_util::TempDir outside_;
  test_util::TempDir out_;
  std::string folder_;
};

TEST_F(FolderArchiverTest, SkipsLinksThatLeaveTheFolderAndNamesThem) {
  fs::create_symlink(outside_.File("secret.jpg"), folder_ + "/cats/secret.jpg");
  // A relative link that climbs out of the folder counts too.
  fs::create_symlink("../../../" + fs::path(outside_.path()).filename().string() + "/secret.jpg",
                     folder_ + "/dogs/climb.jpg");
  std::vector<std::string> warnings;
  const std::string tar = out_.File("pets.tar");
  ASSERT_TRUE(ArchiveFolder(folder_, tar, &warnings).ok());

  EXPECT_EQ(TarEntries(tar), (std::vector<std::string>{"cats/a.jpg", "dogs/b.jpg"}));
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_NE(warnings[0].find("cats/secret.jpg"), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find(outside_.File("secret.jpg")), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find("outside"), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[1].find("dogs/climb.jpg"), std::string::npos) << warnings[1];
}

TEST_F(FolderArchiverTest, FollowsLinksThatStayInsideTheFolder) {
  fs::create_symlink("../cats/a.jpg", folder_ + "/dogs/also-a.jpg");
  std::vector<std::string> warnings;
  const std::string tar = out_.File("pets.tar");
  ASSERT_TRUE(ArchiveFolder(folder_, tar, &warnings).ok());
  EXPECT_EQ(TarEntries(tar),
            (std::vector<std::string>{"cats/a.jpg", "dogs/also-a.jpg", "dogs/b.jpg"}));
  EXPECT_TRUE(warnings.empty());
}

TEST_F(FolderArchiverTest, AFolderReachedThroughALinkIsArchived) {
  // The folder argument itself may be a link (e.g. ./pets -> /data/pets).
  const std::string link = root_.File("pets-link");
  fs::create_directory_symlink(folder_, link);
  std::vector<std::string> warnings;
  const std::string tar = out_.File("pets.tar");
  ASSERT_TRUE(ArchiveFolder(link, tar, &warnings).ok());
  EXPECT_EQ(TarEntries(tar), (std::vector<std::string>{"cats/a.jpg", "dogs/b.jpg"}));
  EXPECT_TRUE(warnings.empty());
}

}  // namespace
}  // namespace kaizen::client
