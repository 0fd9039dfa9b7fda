#include "server/datasets/ingest_report.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kaizen::datasets {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Appends one h x w x c image filled with `value`.
void Add(DecodedDataset* d, int32_t label, int32_t h, int32_t w, int32_t c, uint8_t value) {
  d->records.push_back({label, h, w, c, static_cast<int64_t>(d->pixels.size())});
  d->pixels.insert(d->pixels.end(), static_cast<size_t>(h) * w * c, value);
}

std::string Name(size_t i) { return absl::StrCat("img", i); }

TEST(IngestReportTest, FindsExactDuplicatesOnly) {
  DecodedDataset d;
  d.class_names = {"a", "b"};
  Add(&d, 0, 2, 2, 1, 7);
  Add(&d, 1, 2, 2, 1, 7);  // same pixels as img0
  Add(&d, 1, 2, 2, 1, 8);
  Add(&d, 0, 1, 4, 1, 7);  // same bytes, other shape: not a duplicate
  Add(&d, 0, 2, 2, 1, 7);  // another copy of img0
  v1::DatasetReport report;
  ReportDuplicates(d, Name, 100, &report);
  EXPECT_EQ(report.duplicate_count(), 2);
  ASSERT_EQ(report.duplicates_size(), 2);
  EXPECT_EQ(report.duplicates(0).path(), "img1");
  EXPECT_EQ(report.duplicates(0).duplicate_of(), "img0");
  EXPECT_EQ(report.duplicates(1).path(), "img4");
  EXPECT_EQ(report.duplicates(1).duplicate_of(), "img0");
  ASSERT_EQ(report.warnings_size(), 1);
  EXPECT_THAT(report.warnings(0), HasSubstr("2 images are exact duplicates"));
}

// The digests of the same images find the same duplicates, and an image's
// digest covers its shape as well as its bytes.
TEST(IngestReportTest, DigestsFindTheSameDuplicates) {
  DecodedDataset d;
  d.class_names = {"a", "b"};
  Add(&d, 0, 2, 2, 1, 7);
  Add(&d, 1, 2, 2, 1, 7);
  Add(&d, 1, 2, 2, 1, 8);
  Add(&d, 0, 1, 4, 1, 7);
  Add(&d, 0, 2, 2, 1, 7);
  std::vector<std::string> digests;
  for (const DecodedDataset::Record& r : d.records) {
    digests.push_back(
        ImageDigest(r.height, r.width, r.channels,
                    absl::MakeConstSpan(d.pixels.data() + r.offset,
                                        static_cast<size_t>(r.height * r.width * r.channels))));
  }
  EXPECT_NE(digests[0], digests[3]);
  v1::DatasetReport by_pixels;
  ReportDuplicates(d, Name, 100, &by_pixels);
  v1::DatasetReport by_digest;
  ReportDuplicateDigests(digests, Name, 1, &by_digest);
  EXPECT_EQ(by_digest.duplicate_count(), 2);
  ASSERT_EQ(by_digest.duplicates_size(), 1);
  EXPECT_EQ(by_digest.duplicates(0).path(), by_pixels.duplicates(0).path());
  EXPECT_EQ(by_digest.duplicates(0).duplicate_of(), "img0");
  EXPECT_THAT(by_digest.warnings(), ElementsAre(by_pixels.warnings(0)));
}

TEST(IngestReportTest, ListsAtMostMaxListedDuplicatesButCountsAll) {
  DecodedDataset d;
  d.class_names = {"a", "b"};
  for (int i = 0; i < 5; ++i) Add(&d, i % 2, 1, 1, 1, 3);
  v1::DatasetReport report;
  ReportDuplicates(d, Name, 2, &report);
  EXPECT_EQ(report.duplicate_count(), 4);
  EXPECT_EQ(report.duplicates_size(), 2);
}

TEST(IngestReportTest, NoDuplicatesNoWarning) {
  DecodedDataset d;
  d.class_names = {"a", "b"};
  Add(&d, 0, 1, 1, 1, 1);
  Add(&d, 1, 1, 1, 1, 2);
  v1::DatasetReport report;
  ReportDuplicates(d, Name, 100, &report);
  EXPECT_EQ(report.duplicate_count(), 0);
  EXPECT_EQ(report.warnings_size(), 0);
}

TEST(IngestReportTest, SummarizesClassesAndWarnsAboutImbalance) {
  DecodedDataset d;
  d.class_names = {"cats", "dogs", "owls"};
  for (int i = 0; i < 4; ++i) Add(&d, 0, 2, 2, 1, static_cast<uint8_t>(i));
  for (int i = 0; i < 2; ++i) Add(&d, 1, 2, 2, 1, static_cast<uint8_t>(10 + i));
  v1::Dataset summary;
  SummarizeDataset(d, &summary);
  EXPECT_EQ(summary.num_examples(), 6);
  ASSERT_EQ(summary.classes_size(), 3);
  EXPECT_EQ(summary.classes(0).class_name(), "cats");
  EXPECT_EQ(summary.classes(0).count(), 4);
  EXPECT_EQ(summary.classes(1).label(), 1);
  EXPECT_EQ(summary.classes(2).count(), 0);
  EXPECT_DOUBLE_EQ(summary.report().imbalance_ratio(), 2.0);
  EXPECT_THAT(summary.input_shape(), ElementsAre(1, 2, 2));
  ASSERT_EQ(summary.report().warnings_size(), 2);
  EXPECT_THAT(summary.report().warnings(0), HasSubstr("class 'owls' (label 2) has no examples"));
  EXPECT_THAT(summary.report().warnings(1), HasSubstr("class imbalance: 'cats' has 4"));
}

TEST(IngestReportTest, BalancedWithinTheRatioHasNoWarning) {
  DecodedDataset d;
  d.class_names = {"a", "b"};
  for (int i = 0; i < 3; ++i) Add(&d, 0, 2, 2, 1, static_cast<uint8_t>(i));
  for (int i = 0; i < 2; ++i) Add(&d, 1, 2, 2, 1, static_cast<uint8_t>(10 + i));
  v1::Dataset summary;
  SummarizeDataset(d, &summary);
  EXPECT_DOUBLE_EQ(summary.report().imbalance_ratio(), 1.5);
  EXPECT_EQ(summary.report().warnings_size(), 0);
}

TEST(IngestReportTest, MixedSizesTakeTheMostCommonSizeAndTheMostChannels) {
  DecodedDataset d;
  d.class_names = {"a", "b"};
  Add(&d, 0, 4, 4, 1, 1);
  Add(&d, 0, 4, 4, 1, 2);
  Add(&d, 1, 4, 4, 3, 3);
  Add(&d, 1, 8, 6, 3, 4);
  v1::Dataset summary;
  SummarizeDataset(d, &summary);
  // 4x4 is the most common height x width; one RGB image makes it 3 channels.
  EXPECT_THAT(summary.input_shape(), ElementsAre(3, 4, 4));
  EXPECT_THAT(summary.report().image_sizes(), ElementsAre("4x4x1", "4x4x3", "8x6x3"));
  ASSERT_EQ(summary.report().warnings_size(), 1);
  EXPECT_THAT(summary.report().warnings(0), HasSubstr("images come in 3 different sizes"));
}

}  // namespace
}  // namespace kaizen::datasets
