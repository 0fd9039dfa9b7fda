#include "client/cli/progress_bar.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

namespace kaizen::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(FormatProgressLineTest, HalfWayInMebibytes) {
  const int64_t mib = 1 << 20;
  const std::string line = FormatProgressLine("uploading x", 13 * mib, 26 * mib, absl::Seconds(2));
  EXPECT_EQ(line, "uploading x  [##########----------]   50%  13.0/26.0 MiB  6.5 MiB/s");
}

TEST(FormatProgressLineTest, UnitsFollowTheLargerOfDoneAndTotal) {
  EXPECT_THAT(FormatProgressLine("a", 512, 1024, absl::Seconds(1)), HasSubstr("0.5/1.0 KiB"));
  EXPECT_THAT(FormatProgressLine("a", 0, int64_t{3} << 30, absl::Seconds(1)),
              HasSubstr("0.0/3.0 GiB"));
}

TEST(FormatProgressLineTest, TheFractionIsClampedAndAnUnknownTotalIsDoneOrNot) {
  EXPECT_THAT(FormatProgressLine("a", 300, 100, absl::Seconds(1)),
              HasSubstr("[####################]  100%"));
  EXPECT_THAT(FormatProgressLine("a", 10, 0, absl::Seconds(1)), HasSubstr("100%"));
  EXPECT_THAT(FormatProgressLine("a", 0, 0, absl::ZeroDuration()),
              HasSubstr("[--------------------]    0%"));
  // No time elapsed: a zero rate, not a division by zero.
  EXPECT_THAT(FormatProgressLine("a", 10, 100, absl::ZeroDuration()), HasSubstr(" 0.0 MiB/s"));
}

std::string Captured(FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string out;
  for (int c = std::fgetc(f); c != EOF; c = std::fgetc(f)) out.push_back(static_cast<char>(c));
  return out;
}

TEST(ProgressBarTest, DrawsAndEndsTheLineWhenEnabled) {
  FILE* out = std::tmpfile();
  ASSERT_NE(out, nullptr);
  {
    ProgressBar bar("uploading d", /*enabled=*/true, out);
    bar.Update(50, 100);
    bar.Update(100, 100);  // completion always draws
  }
  const std::string text = Captured(out);
  std::fclose(out);
  EXPECT_THAT(text, StartsWith("\ruploading d  ["));
  EXPECT_THAT(text, HasSubstr("100%"));
  EXPECT_EQ(text.back(), '\n');
}

TEST(ProgressBarTest, DisabledOrNeverMovedLeavesTheStreamAlone) {
  FILE* out = std::tmpfile();
  ASSERT_NE(out, nullptr);
  {
    ProgressBar disabled("a", /*enabled=*/false, out);
    disabled.Update(100, 100);
    ProgressBar idle("b", /*enabled=*/true, out);
  }
  EXPECT_EQ(Captured(out), "");
  std::fclose(out);
}

}  // namespace
}  // namespace kaizen::cli
