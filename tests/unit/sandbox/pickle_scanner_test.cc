#include "server/sandbox/pickle_scanner.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/common/atomic_file.h"
#include "server/sandbox/zip_directory.h"

namespace kaizen::sandbox {
namespace {

using ::testing::HasSubstr;

std::string Nested(int depth) {
  std::string p = "\x80\x02";
  for (int i = 0; i < depth; ++i) p += "](";
  return p + "]" + std::string(depth, 'e') + ".";
}

TEST(PickleScannerTest, AcceptsEveryPickleOfARealTorchScriptFile) {
  std::string bytes;
  ASSERT_TRUE(common::ReadFile(KAIZEN_FIXTURE_DIR "/resnet18.pt", &bytes).ok());
  absl::StatusOr<std::vector<ZipMember>> members =
      ReadZipDirectory(bytes.size(), ReadFromMemory(bytes), {});
  ASSERT_TRUE(members.ok()) << members.status();
  int scanned = 0;
  for (const ZipMember& m : *members) {
    if (m.name.size() < 3 || m.name.compare(m.name.size() - 3, 3, "pkl") != 0) continue;
    absl::StatusOr<std::string> pickle = ReadZipMember(m, ReadFromMemory(bytes), 64 << 20);
    ASSERT_TRUE(pickle.ok()) << pickle.status();
    EXPECT_TRUE(ScanPickle(*pickle, {}).ok()) << m.name << ": " << ScanPickle(*pickle, {});
    ++scanned;
  }
  EXPECT_GE(scanned, 3);
}

TEST(PickleScannerTest, AcceptsNestingWithinTheLimit) {
  EXPECT_TRUE(ScanPickle(Nested(150), {}).ok()) << ScanPickle(Nested(150), {});
}

TEST(PickleScannerTest, RefusesDeepNesting) {
  absl::Status st = ScanPickle(Nested(1'000'000), {});
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("nest deeper than 200"));
  std::string tuples = "\x80\x02" + std::string(500, '(') + ")" + std::string(500, 't') + ".";
  EXPECT_THAT(ScanPickle(tuples, {}).message(), HasSubstr("nest deeper than 200"));
}

TEST(PickleScannerTest, RefusesASelfReferencingList) {
  // L = []; memo[0] = L; L.extend([memo[0]])
  absl::Status st = ScanPickle(std::string("\x80\x02]q\x00(h\x00"
                                           "e.",
                                           10),
                               {});
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr("cycle"));
  // The same with DUP.
  EXPECT_THAT(ScanPickle("\x80\x02]2a.", {}).message(), HasSubstr("cycle"));
}

TEST(PickleScannerTest, RefusesChangingAContainerAfterNestingIt) {
  // A = []; B = [A]; then A is fetched from the memo and grows: B's recorded
  // depth would be stale, so the change itself is refused.
  const std::string p(
      "\x80\x02]q\x00"
      "0(h\x00"
      "lh\x00"
      "(]e0.",
      17);
  absl::Status st = ScanPickle(p, {});
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr("changed after it was nested"));
}

TEST(PickleScannerTest, RefusesMalformedPickles) {
  EXPECT_THAT(ScanPickle("", {}).message(), HasSubstr("ends without STOP"));
  EXPECT_THAT(ScanPickle("\x80\x02X\xff\xff\xff\x7f"
                         "abc.",
                         {})
                  .message(),
              HasSubstr("runs past the end"));
  EXPECT_THAT(ScanPickle("\x80\x02h\x05.", {}).message(), HasSubstr("never stored"));
  EXPECT_THAT(ScanPickle("\x80\x02"
                         "e.",
                         {})
                  .message(),
              HasSubstr("no MARK"));
  EXPECT_THAT(ScanPickle("\x80\x02i\n\n.", {}).message(), HasSubstr("not accepted"));
  EXPECT_THAT(ScanPickle("\x80\x09N.", {}).message(), HasSubstr("protocol 9"));
  EXPECT_THAT(ScanPickle("\x80\x02"
                         "0.",
                         {})
                  .message(),
              HasSubstr("underflow"));
}

TEST(PickleScannerTest, BoundsTheMemo) {
  PickleLimits limits;
  limits.max_memo_entries = 3;
  std::string p = "\x80\x02N";
  for (int i = 0; i < 4; ++i) p += std::string("q") + static_cast<char>(i);
  absl::Status st = ScanPickle(p + ".", limits);
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr("more than 3 memo entries"));
}

}  // namespace
}  // namespace kaizen::sandbox
