#include "server/store/upload_receiver.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <future>

#include "server/common/atomic_file.h"
#include "server/common/sha256.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::store {
namespace {

google::protobuf::RepeatedPtrField<kaizen::v1::UploadPart> Parts(
    std::vector<std::pair<std::string, int64_t>> parts) {
  google::protobuf::RepeatedPtrField<kaizen::v1::UploadPart> out;
  for (auto& [name, size] : parts) {
    auto* p = out.Add();
    p->set_file_name(name);
    p->set_size_bytes(size);
  }
  return out;
}

int CountFiles(const std::string& dir) {
  int n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++n;
  return n;
}

UploadReceiver::Options Opts(const test_util::TempDir& dir, int parts, int64_t max = 1 << 20) {
  UploadReceiver::Options o;
  o.tmp_dir = dir.path();
  o.expected_parts = parts;
  o.max_bytes = max;
  return o;
}

TEST(UploadReceiver, SplitsStreamIntoPartsAcrossChunkBoundaries) {
  test_util::TempDir dir;
  UploadReceiver r(Opts(dir, 2));
  ASSERT_TRUE(r.Start(Parts({{"images", 5}, {"labels", 3}})).ok());
  ASSERT_TRUE(r.Append("abc").ok());
  ASSERT_TRUE(r.Append("defgh").ok());  // crosses the part boundary
  ASSERT_TRUE(r.Finish(common::Sha256Hex("abcdefgh")).ok());
  std::string a, b;
  ASSERT_TRUE(common::ReadFile(r.part_paths()[0], &a).ok());
  ASSERT_TRUE(common::ReadFile(r.part_paths()[1], &b).ok());
  EXPECT_EQ(a, "abcde");
  EXPECT_EQ(b, "fgh");
}

TEST(UploadReceiver, TruncatedStreamIsInvalidArgumentNamingThePart) {
  test_util::TempDir dir;
  UploadReceiver r(Opts(dir, 2));
  ASSERT_TRUE(r.Start(Parts({{"images.gz", 5}, {"labels.gz", 3}})).ok());
  ASSERT_TRUE(r.Append("abcdef").ok());
  absl::Status st = r.Finish(common::Sha256Hex("abcdef"));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("labels.gz"), absl::string_view::npos) << st;
  EXPECT_NE(st.message().find("6 of 8"), absl::string_view::npos) << st;
}

TEST(UploadReceiver, WrongChecksumIsInvalidArgument) {
  test_util::TempDir dir;
  UploadReceiver r(Opts(dir, 1));
  ASSERT_TRUE(r.Start(Parts({{"a.tar", 3}})).ok());
  ASSERT_TRUE(r.Append("abc").ok());
  absl::Status st = r.Finish(common::Sha256Hex("abd"));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("sha256 mismatch"), absl::string_view::npos) << st;
}

TEST(UploadReceiver, ExtraBytesAndOversizeAreRejected) {
  test_util::TempDir dir;
  UploadReceiver r(Opts(dir, 1));
  ASSERT_TRUE(r.Start(Parts({{"a.tar", 3}})).ok());
  EXPECT_EQ(r.Append("abcd").code(), absl::StatusCode::kInvalidArgument);
  UploadReceiver big(Opts(dir, 1, /*max=*/10));
  EXPECT_EQ(big.Start(Parts({{"a.tar", 11}})).code(), absl::StatusCode::kResourceExhausted);
  UploadReceiver wrong(Opts(dir, 2));
  EXPECT_EQ(wrong.Start(Parts({{"a", 1}})).code(), absl::StatusCode::kInvalidArgument);
}

TEST(UploadReceiver, DestructionRemovesTemporaryFiles) {
  test_util::TempDir dir;
  {
    UploadReceiver r(Opts(dir, 2));
    ASSERT_TRUE(r.Start(Parts({{"a", 2}, {"b", 2}})).ok());
    ASSERT_TRUE(r.Append("ab").ok());
    EXPECT_EQ(CountFiles(dir.path()), 2);
  }
  EXPECT_EQ(CountFiles(dir.path()), 0);
}

TEST(UploadReceiver, DeclaredSizesThatOverflowAreInvalidArgumentNamingThePart) {
  // Each part alone is under INT64_MAX; their sum wrapped to a negative total
  // that passed the size limit.
  test_util::TempDir dir;
  UploadReceiver r(Opts(dir, 2));
  const int64_t huge = (int64_t{1} << 62) + (int64_t{1} << 61);
  absl::Status st = r.Start(Parts({{"images.gz", huge}, {"labels.gz", huge}}));
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("labels.gz"), absl::string_view::npos) << st;
  EXPECT_NE(st.message().find("overflows"), absl::string_view::npos) << st;
  EXPECT_EQ(CountFiles(dir.path()), 0);
}

// A reader on another thread (an IDX upload decoding as it arrives) sees
// each chunk in the part's file as soon as Append reports it, learns when a
// part is complete, and hears the verdict.
TEST(UploadReceiver, AFollowerSeesEachChunkAsItArrivesAndThenTheVerdict) {
  test_util::TempDir dir;
  UploadReceiver r(Opts(dir, 2));
  ASSERT_TRUE(r.Start(Parts({{"images", 6}, {"labels", 3}})).ok());
  const auto images = r.Follow(0);
  const auto labels = r.Follow(1);
  std::string got;
  ASSERT_TRUE(r.Append("abc").ok());
  EXPECT_EQ(images(0), absl::StatusOr<bool>(true));
  // Flushed, not left in the writer's buffer.
  ASSERT_TRUE(common::ReadFile(r.part_paths()[0], &got).ok());
  EXPECT_EQ(got, "abc");

  // A reader that has everything so far waits for the next chunk.
  auto waiting = std::async(std::launch::async, [&] { return images(3); });
  EXPECT_EQ(waiting.wait_for(std::chrono::milliseconds(50)), std::future_status::timeout);
  ASSERT_TRUE(r.Append("defg").ok());  // ends the images, starts the labels
  EXPECT_EQ(waiting.get(), absl::StatusOr<bool>(true));
  EXPECT_EQ(images(6), absl::StatusOr<bool>(false)) << "the images are complete";
  EXPECT_EQ(labels(0), absl::StatusOr<bool>(true));
  ASSERT_TRUE(common::ReadFile(r.part_paths()[1], &got).ok());
  EXPECT_EQ(got, "g");

  auto verdict = std::async(std::launch::async, [&] { return r.AwaitVerdict(); });
  EXPECT_EQ(verdict.wait_for(std::chrono::milliseconds(50)), std::future_status::timeout);
  ASSERT_TRUE(r.Append("hi").ok());
  EXPECT_EQ(labels(3), absl::StatusOr<bool>(false));
  ASSERT_TRUE(r.Finish(common::Sha256Hex("abcdefghi")).ok());
  EXPECT_TRUE(verdict.get().ok());
}

TEST(UploadReceiver, AbandoningOrAFailedFinishEndsEveryWaitWithCancelled) {
  test_util::TempDir dir;
  {
    UploadReceiver r(Opts(dir, 1));
    ASSERT_TRUE(r.Start(Parts({{"images", 6}})).ok());
    const auto images = r.Follow(0);
    ASSERT_TRUE(r.Append("abc").ok());
    auto waiting = std::async(std::launch::async, [&] { return images(3); });
    auto verdict = std::async(std::launch::async, [&] { return r.AwaitVerdict(); });
    r.Abandon();
    EXPECT_TRUE(absl::IsCancelled(waiting.get().status()));
    EXPECT_TRUE(absl::IsCancelled(verdict.get()));
    // At once, even where bytes are there to read.
    EXPECT_TRUE(absl::IsCancelled(images(0).status()));
  }
  UploadReceiver r(Opts(dir, 1));
  ASSERT_TRUE(r.Start(Parts({{"images", 3}})).ok());
  const auto images = r.Follow(0);
  ASSERT_TRUE(r.Append("abc").ok());
  EXPECT_FALSE(r.Finish(common::Sha256Hex("abd")).ok());
  EXPECT_TRUE(absl::IsCancelled(r.AwaitVerdict()));
  EXPECT_TRUE(absl::IsCancelled(images(3).status()));
}

}  // namespace
}  // namespace kaizen::store
