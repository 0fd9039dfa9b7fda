#include "client/lib/temp_file.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <string>
#include <utility>

namespace kaizen::client {
namespace {

using ::testing::EndsWith;
using ::testing::HasSubstr;

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

TEST(TempFileTest, CreatesAUniqueEmptyFileRemovedWithTheObject) {
  std::string path;
  {
    absl::StatusOr<TempFile> a = TempFile::Create(".tar");
    absl::StatusOr<TempFile> b = TempFile::Create(".tar");
    ASSERT_TRUE(a.ok() && b.ok());
    path = a->path();
    EXPECT_THAT(path, HasSubstr("/kaizen-"));
    EXPECT_THAT(path, EndsWith(".tar"));
    EXPECT_NE(path, b->path());
    struct stat st;
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_size, 0);
  }
  EXPECT_FALSE(Exists(path));
}

TEST(TempFileTest, MovingHandsOverTheFile) {
  absl::StatusOr<TempFile> a = TempFile::Create("");
  ASSERT_TRUE(a.ok());
  const std::string path = a->path();
  {
    TempFile b = *std::move(a);
    EXPECT_EQ(b.path(), path);
    TempFile c = std::move(b);  // the moved-from objects remove nothing
    EXPECT_TRUE(Exists(path));
  }
  EXPECT_FALSE(Exists(path));
}

TEST(TempFileTest, HonoursTmpdir) {
  const char* old = std::getenv("TMPDIR");
  const std::string saved = old ? old : "";
  ::setenv("TMPDIR", "/nonexistent-kaizen-tmpdir", 1);
  absl::StatusOr<TempFile> f = TempFile::Create(".x");
  if (old) {
    ::setenv("TMPDIR", saved.c_str(), 1);
  } else {
    ::unsetenv("TMPDIR");
  }
  EXPECT_FALSE(f.ok());
}

}  // namespace
}  // namespace kaizen::client
