#include "server/auth/bounded_read.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <string>

#include "tests/test_util/temp_dir.h"

namespace kaizen::auth {
namespace {

using ::testing::HasSubstr;

void Write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

TEST(BoundedReadTest, ReadsARegularFileUpToTheCap) {
  test_util::TempDir dir;
  Write(dir.File("tokens"), "alice admin sha256:00\n");
  absl::StatusOr<std::string> text = ReadRegularFile(dir.File("tokens"), 22);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "alice admin sha256:00\n");
}

TEST(BoundedReadTest, AFileOverTheCapIsRefusedWithItsName) {
  test_util::TempDir dir;
  Write(dir.File("big"), std::string(100, 'x'));
  absl::StatusOr<std::string> text = ReadRegularFile(dir.File("big"), 99);
  ASSERT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(text.status().message(), HasSubstr(dir.File("big")));
}

TEST(BoundedReadTest, AMissingFileIsNotFound) {
  test_util::TempDir dir;
  EXPECT_EQ(ReadRegularFile(dir.File("absent"), 10).status().code(), absl::StatusCode::kNotFound);
}

TEST(BoundedReadTest, AFifoIsRefusedWithoutBlocking) {
  test_util::TempDir dir;
  ASSERT_EQ(::mkfifo(dir.File("fifo").c_str(), 0600), 0);
  // No writer ever opens the FIFO: a blocking open would hang this test.
  absl::StatusOr<std::string> text = ReadRegularFile(dir.File("fifo"), 10);
  ASSERT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(text.status().message(), HasSubstr("regular file"));
}

TEST(BoundedReadTest, ADirectoryIsRefused) {
  test_util::TempDir dir;
  EXPECT_EQ(ReadRegularFile(dir.path(), 10).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kaizen::auth
