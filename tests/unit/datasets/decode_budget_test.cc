// Decode budgets against real hostile inputs built here: a progressive JPEG
// with hundreds of scans, a tar.gz whose ignored member is a decompression
// bomb, images that together pass the budget.
#include "server/datasets/decode_budget.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/datasets/archive_ingestor.h"
#include "server/datasets/image_decoder.h"
#include "tests/test_util/archive_ingest.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::datasets {
namespace {

using test_util::ArchiveEntry;
using test_util::ArchiveKind;
using ::testing::HasSubstr;

using test_util::EncodeManyScanJpeg;

TEST(DecodeBudget, LimitIsTheRatioToReceivedBytesWithinAllowanceAndMaximum) {
  DecodeBudget::Options o;
  o.max_bytes = 10'000;
  o.max_ratio = 10;
  o.ratio_allowance_bytes = 100;
  EXPECT_EQ(DecodeBudget(o, 500).limit(), 5'000);
  EXPECT_EQ(DecodeBudget(o, 5).limit(), 100);             // the allowance
  EXPECT_EQ(DecodeBudget(o, 1'000'000).limit(), 10'000);  // the maximum
  o.max_ratio = 1e300;                                    // no overflow
  EXPECT_EQ(DecodeBudget(o, int64_t{1} << 62).limit(), 10'000);
}

TEST(DecodeBudget, ChargeStopsAtTheLimitNamingTheInput) {
  DecodeBudget::Options o;
  o.max_bytes = 1'000;
  DecodeBudget budget(o, 1);
  EXPECT_TRUE(budget.Charge(600, "a.png").ok());
  const absl::Status st = budget.Charge(600, "b.png");
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(st.message()), HasSubstr("b.png"));
  EXPECT_THAT(std::string(st.message()), HasSubstr("1000 bytes"));
  EXPECT_TRUE(budget.exhausted());
  EXPECT_FALSE(budget.Charge(1, "c.png").ok());  // stays exhausted
  EXPECT_EQ(budget.used(), 600);
}

TEST(JpegScanLimit, ProgressiveJpegWithHundredsOfScansIsStoppedEarly) {
  const std::string jpeg = EncodeManyScanJpeg(64, 64, 3);  // 192 scans
  ASSERT_FALSE(jpeg.empty());
  const absl::StatusOr<Image> image = DecodeImage(jpeg, 25'000'000);  // default scan limit
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(image.status().message()), HasSubstr("more than 100 scans"));

  // The file itself is valid: with a higher limit it decodes.
  DecodeLimits generous;
  generous.max_jpeg_scans = 1000;
  const absl::StatusOr<Image> decoded = DecodeImage(jpeg, generous);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->width, 64);
}

TEST(JpegScanLimit, OrdinaryProgressiveJpegDecodes) {
  const std::string jpeg = EncodeManyScanJpeg(32, 32, 1);  // 64 scans
  const absl::StatusOr<Image> image = DecodeImage(jpeg, 25'000'000);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->height, 32);
}

TEST(ImageBudget, DecodeIsRefusedBeforeAllocatingPastTheBudget) {
  DecodeBudget::Options o;
  o.max_bytes = 100'000;
  DecodeBudget budget(o, 1);
  DecodeLimits limits;
  limits.budget = &budget;
  ASSERT_TRUE(DecodeImage(test_util::EncodePng(100, 100, 3, 1), limits).ok());  // 30,000 bytes
  ASSERT_TRUE(DecodeImage(test_util::EncodeJpeg(100, 100, 3, 2), limits).ok());
  const absl::StatusOr<Image> third = DecodeImage(test_util::EncodePng(150, 150, 3, 3), limits);
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(third.status().message()), HasSubstr("PNG of 150x150"));
  EXPECT_TRUE(budget.exhausted());
  EXPECT_EQ(budget.used(), 60'000);
}

class ArchiveBudgetTest : public ::testing::Test {
 protected:
  absl::StatusOr<IngestResult> Ingest(const std::vector<ArchiveEntry>& entries, ArchiveKind kind,
                                      const IngestOptions& options) {
    const std::string path = dir_.File("upload.bin");
    test_util::WriteBinaryFile(path, test_util::MakeArchive(entries, kind));
    return test_util::IngestArchiveAndRead(path, "photos.tgz", options, dir_.File("stored.krf"));
  }
  std::vector<ArchiveEntry> ImagesAnd(const ArchiveEntry& extra) {
    return {{"cats/1.png", test_util::EncodePng(8, 8, 3, 1)},
            extra,
            {"dogs/1.png", test_util::EncodePng(8, 8, 3, 2)}};
  }
  static IngestOptions Tight() {
    IngestOptions o;
    o.budget.max_ratio = 50;
    o.budget.ratio_allowance_bytes = 1 << 20;
    return o;
  }

  test_util::TempDir dir_;
};

TEST_F(ArchiveBudgetTest, IgnoredMemberInTarGzIsNotDecompressedPastTheBudget) {
  // 50 MB of zeros gzip to ~50 KB: a 1000x bomb hidden in a file that is
  // ignored (not an image), which used to be decompressed in full.
  const ArchiveEntry bomb{"notes/zeros.bin", std::string(50 << 20, '\0')};
  const absl::StatusOr<IngestResult> result = Ingest(ImagesAnd(bomb), ArchiveKind::kTarGz, Tight());
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("notes/zeros.bin"));
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("decode budget"));
}

TEST_F(ArchiveBudgetTest, IgnoredZipMemberIsSkippedWithoutInflating) {
  // The same bomb in a zip is skipped by its compressed size: nothing is
  // inflated, so the upload stays within the same tight budget.
  const ArchiveEntry bomb{"notes/zeros.bin", std::string(50 << 20, '\0')};
  const absl::StatusOr<IngestResult> result = Ingest(ImagesAnd(bomb), ArchiveKind::kZip, Tight());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->summary.num_examples(), 2);
}

TEST_F(ArchiveBudgetTest, CompressedImageBombIsStopped) {
  // An image-named member that inflates far past the budget.
  const ArchiveEntry bomb{"cats/2.png", std::string(50 << 20, '\0')};
  for (ArchiveKind kind : {ArchiveKind::kTarGz, ArchiveKind::kZip}) {
    const absl::StatusOr<IngestResult> result = Ingest(ImagesAnd(bomb), kind, Tight());
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), absl::StatusCode::kResourceExhausted) << result.status();
    EXPECT_THAT(std::string(result.status().message()), HasSubstr("cats/2.png"));
  }
}

TEST_F(ArchiveBudgetTest, DecodedPixelsCountAgainstTheBudget) {
  IngestOptions o;
  o.budget.max_bytes = 100'000;
  std::vector<ArchiveEntry> entries;
  for (int i = 0; i < 4; ++i) {
    entries.push_back({"cats/" + std::to_string(i) + ".png", test_util::EncodePng(100, 100, 3, i)});
    entries.push_back(
        {"dogs/" + std::to_string(i) + ".png", test_util::EncodePng(100, 100, 3, 10 + i)});
  }
  const absl::StatusOr<IngestResult> result = Ingest(entries, ArchiveKind::kTar, o);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kResourceExhausted) << result.status();
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("PNG of 100x100"));
}

TEST_F(ArchiveBudgetTest, ManyScanJpegInAnArchiveFailsTheUploadNamingTheFile) {
  const ArchiveEntry hostile{"cats/scans.jpg", EncodeManyScanJpeg(64, 64, 3)};
  const absl::StatusOr<IngestResult> result =
      Ingest(ImagesAnd(hostile), ArchiveKind::kTar, IngestOptions{});
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("cats/scans.jpg"));
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("scans"));
}

}  // namespace
}  // namespace kaizen::datasets
