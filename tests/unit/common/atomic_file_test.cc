#include "server/common/atomic_file.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "server/common/sha256.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::common {
namespace {

TEST(AtomicFileWriter, CommitReplacesTargetAndLeavesNoTemporary) {
  test_util::TempDir dir;
  const std::string path = dir.File("f.bin");
  ASSERT_TRUE(WriteFileAtomically(path, "old").ok());
  ASSERT_TRUE(WriteFileAtomically(path, "new contents").ok());
  std::string got;
  ASSERT_TRUE(ReadFile(path, &got).ok());
  EXPECT_EQ(got, "new contents");
  EXPECT_EQ(test_util::CountFiles(dir.path()), 1u);
}

TEST(AtomicFileWriter, AbandonedWriterKeepsOldFileAndRemovesTemporary) {
  test_util::TempDir dir;
  const std::string path = dir.File("f.bin");
  ASSERT_TRUE(WriteFileAtomically(path, "old").ok());
  {
    AtomicFileWriter w;
    ASSERT_TRUE(AtomicFileWriter::Open(path, &w).ok());
    ASSERT_TRUE(w.Append("half written").ok());
    EXPECT_EQ(test_util::CountFiles(dir.path()), 2u);
  }  // destroyed without Commit()
  std::string got;
  ASSERT_TRUE(ReadFile(path, &got).ok());
  EXPECT_EQ(got, "old");
  EXPECT_EQ(test_util::CountFiles(dir.path()), 1u);
}

TEST(AtomicFileWriter, AGivenBufferHoldsSmallWritesAndMovesWithTheWriter) {
  test_util::TempDir dir;
  const std::string path = dir.File("records.bin");
  AtomicFileWriter first;
  ASSERT_TRUE(AtomicFileWriter::Open(path, &first, 64 << 10).ok());
  std::string expected;
  for (int i = 0; i < 40; ++i) {
    const std::string piece(784, static_cast<char>('a' + i % 26));
    ASSERT_TRUE(first.Append(piece).ok());
    expected += piece;
  }
  // 31,360 bytes are still in the 64 KiB buffer: the temporary file is empty.
  std::string tmp;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    tmp = entry.path().string();
  }
  ASSERT_NE(tmp.find("records.bin.tmp-"), std::string::npos) << tmp;
  EXPECT_EQ(std::filesystem::file_size(tmp), 0u);

  AtomicFileWriter second = std::move(first);  // the buffer goes with the stream
  const std::string big(200'000, 'z');
  ASSERT_TRUE(second.Append(big).ok());
  expected += big;
  EXPECT_EQ(second.bytes_written(), static_cast<int64_t>(expected.size()));
  ASSERT_TRUE(second.Commit().ok());
  std::string got;
  ASSERT_TRUE(ReadFile(path, &got).ok());
  EXPECT_TRUE(got == expected);
  EXPECT_EQ(test_util::CountFiles(dir.path()), 1u);
}

TEST(AtomicFileWriter, OpenFailsInMissingDirectory) {
  AtomicFileWriter w;
  absl::Status st = AtomicFileWriter::Open("/nonexistent-dir-kaizen/x", &w);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("/nonexistent-dir-kaizen/x"), absl::string_view::npos);
}

TEST(DurableRename, MovesFile) {
  test_util::TempDir dir;
  ASSERT_TRUE(WriteFileAtomically(dir.File("a"), "x").ok());
  ASSERT_TRUE(DurableRename(dir.File("a"), dir.File("b")).ok());
  EXPECT_FALSE(std::filesystem::exists(dir.File("a")));
  EXPECT_TRUE(std::filesystem::exists(dir.File("b")));
}

TEST(Sha256, MatchesKnownVectorsIncrementally) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  Sha256 h;
  h.Update("a");
  h.Update("bc");
  EXPECT_EQ(h.HexDigest(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

}  // namespace
}  // namespace kaizen::common
