// IngestImageFolderArchive: real archives built with libarchive, real JPEG and
// PNG files, checked through the summary, the report and the decoded data.
#include "server/datasets/archive_ingestor.h"

#include <archive.h>
#include <archive_entry.h>
#include <malloc.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/datasets/dataset_file.h"
#include "server/datasets/image_decoder.h"
#include "server/datasets/image_encoder.h"
#include "server/datasets/record_file.h"
#include "tests/test_util/archive_ingest.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::datasets {
namespace {

using test_util::ArchiveEntry;
using test_util::ArchiveKind;
using test_util::EncodeJpeg;
using test_util::EncodePng;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

class ArchiveIngestTest : public ::testing::Test {
 protected:
  absl::StatusOr<IngestResult> Ingest(const std::string& archive_bytes,
                                      const IngestOptions& options = {}) {
    const std::string path = dir_.File("upload.bin");
    test_util::WriteBinaryFile(path, archive_bytes);
    return test_util::IngestArchiveAndRead(path, "photos.tgz", options, dir_.File("stored.krf"));
  }
  absl::StatusOr<IngestResult> Ingest(const std::vector<ArchiveEntry>& entries,
                                      const IngestOptions& options = {}) {
    return Ingest(test_util::MakeArchive(entries, ArchiveKind::kTarGz), options);
  }

  test_util::TempDir dir_;
};

// (class name, count) pairs of a summary, in label order.
std::vector<std::pair<std::string, int64_t>> Counts(const v1::Dataset& summary) {
  std::vector<std::pair<std::string, int64_t>> counts;
  for (int i = 0; i < summary.classes_size(); ++i) {
    EXPECT_EQ(summary.classes(i).label(), i);
    counts.emplace_back(summary.classes(i).class_name(), summary.classes(i).count());
  }
  return counts;
}

using Pair = std::pair<std::string, int64_t>;

std::vector<std::string> Ignored(const v1::Dataset& summary) {
  return {summary.report().ignored_files().begin(), summary.report().ignored_files().end()};
}

class ArchiveKindTest : public ArchiveIngestTest,
                        public ::testing::WithParamInterface<ArchiveKind> {};

TEST_P(ArchiveKindTest, IngestsClassFolders) {
  const std::vector<ArchiveEntry> entries = {
      {"dogs/", "", true},
      {"dogs/d1.png", EncodePng(12, 10, 3, 1)},
      {"dogs/d2.png", EncodePng(12, 10, 3, 2)},
      {"cats/", "", true},
      {"cats/c2.jpg", EncodeJpeg(12, 10, 3, 4)},
      {"cats/c1.jpg", EncodeJpeg(12, 10, 3, 3)},
      {"cats/c3.jpeg", EncodeJpeg(12, 10, 3, 5)},
  };
  absl::StatusOr<IngestResult> result = Ingest(test_util::MakeArchive(entries, GetParam()));
  ASSERT_TRUE(result.ok()) << result.status();
  const v1::Dataset& summary = result->summary;
  EXPECT_EQ(summary.num_examples(), 5);
  EXPECT_THAT(Counts(summary), ElementsAre(Pair("cats", 3), Pair("dogs", 2)));
  EXPECT_THAT(summary.input_shape(), ElementsAre(3, 10, 12));
  EXPECT_EQ(summary.report().failed_files_size(), 0);
  EXPECT_EQ(summary.report().ignored_files_size(), 0);
  EXPECT_EQ(summary.report().duplicate_count(), 0);
  EXPECT_DOUBLE_EQ(summary.report().imbalance_ratio(), 1.5);
  EXPECT_EQ(summary.report().warnings_size(), 0) << summary.report().DebugString();

  // Records are in label order, then path order; PNG pixels are exact.
  const DecodedDataset& data = result->data;
  EXPECT_THAT(data.class_names, ElementsAre("cats", "dogs"));
  ASSERT_EQ(data.records.size(), 5u);
  EXPECT_EQ(data.pixels.size(), 5u * 12 * 10 * 3);
  const std::vector<int32_t> labels = {data.records[0].label, data.records[1].label,
                                       data.records[2].label, data.records[3].label,
                                       data.records[4].label};
  EXPECT_THAT(labels, ElementsAre(0, 0, 0, 1, 1));
  const DecodedDataset::Record& d2 = data.records[4];
  EXPECT_EQ(std::vector<uint8_t>(data.pixels.begin() + d2.offset,
                                 data.pixels.begin() + d2.offset + 12 * 10 * 3),
            test_util::MakePixels(12, 10, 3, 2));
}

INSTANTIATE_TEST_SUITE_P(AllKinds, ArchiveKindTest,
                         ::testing::Values(ArchiveKind::kTar, ArchiveKind::kTarGz,
                                           ArchiveKind::kZip));

TEST_F(ArchiveIngestTest, MatchesExtensionsCaseInsensitively) {
  absl::StatusOr<IngestResult> result = Ingest({
      {"cats/A.JPG", EncodeJpeg(8, 8, 3, 1)},
      {"cats/B.Jpeg", EncodeJpeg(8, 8, 3, 2)},
      {"dogs/C.PNG", EncodePng(8, 8, 3, 3)},
  });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(Counts(result->summary), ElementsAre(Pair("cats", 2), Pair("dogs", 1)));
}

TEST_F(ArchiveIngestTest, StripsSingleTopLevelFolder) {
  absl::StatusOr<IngestResult> result = Ingest({
      {"flowers/", "", true},
      {"flowers/README.txt", "about these flowers"},
      {"flowers/roses/", "", true},
      {"flowers/roses/a.jpg", EncodeJpeg(8, 8, 3, 1)},
      {"flowers/roses/b.jpg", EncodeJpeg(8, 8, 3, 2)},
      {"flowers/tulips/c.png", EncodePng(8, 8, 3, 3)},
      {"flowers/cover.jpg", EncodeJpeg(8, 8, 3, 4)},
  });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(Counts(result->summary), ElementsAre(Pair("roses", 2), Pair("tulips", 1)));
  EXPECT_THAT(Ignored(result->summary),
              UnorderedElementsAre("flowers/README.txt", "flowers/cover.jpg"));
}

TEST_F(ArchiveIngestTest, KeepsTopLevelClassFoldersWithALeadingDotSlash) {
  absl::StatusOr<IngestResult> result = Ingest({
      {"./", "", true},
      {"./cats/a.jpg", EncodeJpeg(8, 8, 3, 1)},
      {"./dogs/b.jpg", EncodeJpeg(8, 8, 3, 2)},
  });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(Counts(result->summary), ElementsAre(Pair("cats", 1), Pair("dogs", 1)));
}

TEST_F(ArchiveIngestTest, ReportsCorruptAndDuplicateFilesButSucceeds) {
  const std::string a = EncodeJpeg(16, 16, 3, 1);
  const std::string png = EncodePng(16, 16, 3, 9);
  absl::StatusOr<IngestResult> result = Ingest({
      {"cats/a.jpg", a},
      {"cats/b.jpg", a},  // same bytes
      {"cats/truncated.jpg", a.substr(0, a.size() / 2)},
      {"dogs/c.png", png},
      {"dogs/empty.png", ""},
      {"dogs/text.png", "this is not a picture"},
      {"dogs/d.png", EncodePng(16, 16, 3, 10)},
      {"dogs/e.png", png},  // same pixels as c.png
  });
  ASSERT_TRUE(result.ok()) << result.status();
  const v1::Dataset& summary = result->summary;
  EXPECT_EQ(summary.num_examples(), 5);
  EXPECT_THAT(Counts(summary), ElementsAre(Pair("cats", 2), Pair("dogs", 3)));

  const v1::DatasetReport& report = summary.report();
  ASSERT_EQ(report.failed_files_size(), 3);
  EXPECT_EQ(report.failed_files(0).path(), "cats/truncated.jpg");
  EXPECT_THAT(report.failed_files(0).reason(), HasSubstr("truncated JPEG"));
  EXPECT_EQ(report.failed_files(1).path(), "dogs/empty.png");
  EXPECT_THAT(report.failed_files(1).reason(), HasSubstr("empty file"));
  EXPECT_EQ(report.failed_files(2).path(), "dogs/text.png");
  EXPECT_THAT(report.failed_files(2).reason(), HasSubstr("not a JPEG or PNG"));

  EXPECT_EQ(report.duplicate_count(), 2);
  ASSERT_EQ(report.duplicates_size(), 2);
  EXPECT_EQ(report.duplicates(0).path(), "cats/b.jpg");
  EXPECT_EQ(report.duplicates(0).duplicate_of(), "cats/a.jpg");
  EXPECT_EQ(report.duplicates(1).path(), "dogs/e.png");
  EXPECT_EQ(report.duplicates(1).duplicate_of(), "dogs/c.png");
  EXPECT_THAT(report.warnings(), ::testing::Contains(HasSubstr("could not be decoded")));
  EXPECT_THAT(report.warnings(), ::testing::Contains(HasSubstr("exact duplicates")));
}

TEST_F(ArchiveIngestTest, IgnoresHiddenAndStrayFiles) {
  const std::string jpg = EncodeJpeg(8, 8, 3, 1);
  absl::StatusOr<IngestResult> result = Ingest({
      {".DS_Store", "mac"},
      {"__MACOSX/", "", true},
      {"__MACOSX/cats/._a.jpg", "apple double"},
      {".git/", "", true},
      {".git/objects/x.png", EncodePng(8, 8, 3, 1)},
      {"cats/.hidden.jpg", jpg},
      {"README.md", "readme"},
      {"top.jpg", jpg},
      {"cats/a.jpg", jpg},
      {"cats/notes.txt", "notes"},
      {"cats/anim.gif", "GIF89a"},
      {"cats/kittens/deep.jpg", EncodeJpeg(8, 8, 3, 2)},
      {"dogs/b.jpg", EncodeJpeg(8, 8, 3, 3)},
      {"../evil.jpg", jpg},
      {"dogs/../../escape.jpg", jpg},
  });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(Counts(result->summary), ElementsAre(Pair("cats", 1), Pair("dogs", 1)));
  EXPECT_THAT(Ignored(result->summary),
              UnorderedElementsAre(".DS_Store", "__MACOSX/cats/._a.jpg", ".git/objects/x.png",
                                   "cats/.hidden.jpg", "README.md", "top.jpg", "cats/notes.txt",
                                   "cats/anim.gif", "cats/kittens/deep.jpg", "../evil.jpg",
                                   "dogs/../../escape.jpg"));
  EXPECT_EQ(result->summary.report().failed_files_size(), 0);
}

TEST_F(ArchiveIngestTest, CapsListedIgnoredFiles) {
  std::vector<ArchiveEntry> entries = {{"cats/a.jpg", EncodeJpeg(8, 8, 3, 1)},
                                       {"dogs/b.jpg", EncodeJpeg(8, 8, 3, 2)}};
  for (int i = 0; i < 5; ++i) entries.push_back({"cats/note" + std::to_string(i) + ".txt", "x"});
  IngestOptions options;
  options.max_listed = 2;
  absl::StatusOr<IngestResult> result = Ingest(entries, options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->summary.report().ignored_files_size(), 2);
  EXPECT_THAT(result->summary.report().warnings(),
              ::testing::Contains(HasSubstr("5 archive entries were ignored")));
}

TEST_F(ArchiveIngestTest, RejectsEmptyArchive) {
  for (ArchiveKind kind : {ArchiveKind::kTar, ArchiveKind::kTarGz, ArchiveKind::kZip}) {
    absl::StatusOr<IngestResult> result = Ingest(test_util::MakeArchive({}, kind));
    ASSERT_TRUE(absl::IsInvalidArgument(result.status())) << result.status();
    EXPECT_EQ(result.status().message(), "photos.tgz: the archive is empty");
  }
}

TEST_F(ArchiveIngestTest, RejectsArchiveWithoutUsableImages) {
  absl::StatusOr<IngestResult> result = Ingest({
      {"docs/readme.txt", "hello"},
      {"cats/broken.jpg", "\xFF\xD8\xFF garbage"},
  });
  ASSERT_TRUE(absl::IsInvalidArgument(result.status())) << result.status();
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("photos.tgz: no usable images"));
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("cats/broken.jpg"));
}

TEST_F(ArchiveIngestTest, RejectsSingleClass) {
  absl::StatusOr<IngestResult> result = Ingest({
      {"cats/a.jpg", EncodeJpeg(8, 8, 3, 1)},
      {"cats/b.jpg", EncodeJpeg(8, 8, 3, 2)},
  });
  ASSERT_TRUE(absl::IsInvalidArgument(result.status())) << result.status();
  EXPECT_EQ(result.status().message(),
            "photos.tgz: only one class ('cats') was found; at least two class folders are "
            "needed");
}

TEST_F(ArchiveIngestTest, DropsClassWhoseImagesAllFailed) {
  absl::StatusOr<IngestResult> result = Ingest({
      {"birds/a.jpg", "\xFF\xD8\xFF\xE0 broken"},
      {"cats/a.jpg", EncodeJpeg(8, 8, 3, 1)},
      {"dogs/a.jpg", EncodeJpeg(8, 8, 3, 2)},
  });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(Counts(result->summary), ElementsAre(Pair("cats", 1), Pair("dogs", 1)));
  EXPECT_THAT(result->summary.report().warnings(),
              ::testing::Contains(HasSubstr("class folder 'birds' was dropped")));

  absl::StatusOr<IngestResult> one_left = Ingest({
      {"birds/a.jpg", "\xFF\xD8\xFF\xE0 broken"},
      {"cats/a.jpg", EncodeJpeg(8, 8, 3, 1)},
  });
  ASSERT_TRUE(absl::IsInvalidArgument(one_left.status())) << one_left.status();
  EXPECT_THAT(std::string(one_left.status().message()), HasSubstr("only one class ('cats')"));
  EXPECT_THAT(std::string(one_left.status().message()), HasSubstr("birds"));
}

TEST_F(ArchiveIngestTest, RejectsNotAnArchive) {
  for (const std::string& bytes : {std::string("this is a text file, not an archive\n"),
                                   EncodeJpeg(8, 8, 3, 1), std::string()}) {
    absl::StatusOr<IngestResult> result = Ingest(bytes);
    ASSERT_TRUE(absl::IsInvalidArgument(result.status())) << result.status();
    EXPECT_THAT(std::string(result.status().message()),
                HasSubstr("photos.tgz: not a tar or zip archive ("));
  }
}

TEST_F(ArchiveIngestTest, RejectsTruncatedArchive) {
  // Small archives are cut inside libarchive's first read-ahead, large ones
  // mid-stream; both must say "truncated".
  for (int size : {32, 256}) {
    std::vector<ArchiveEntry> entries;
    for (int i = 0; i < 6; ++i) {
      entries.push_back({"cats/" + std::to_string(i) + ".png", EncodePng(size, size, 3, i)});
      entries.push_back({"dogs/" + std::to_string(i) + ".png", EncodePng(size, size, 3, 9 + i)});
    }
    for (ArchiveKind kind : {ArchiveKind::kTar, ArchiveKind::kTarGz, ArchiveKind::kZip}) {
      SCOPED_TRACE(size);
      const std::string archive = test_util::MakeArchive(entries, kind);
      absl::StatusOr<IngestResult> result = Ingest(archive.substr(0, archive.size() * 6 / 10));
      ASSERT_TRUE(absl::IsInvalidArgument(result.status())) << result.status();
      EXPECT_THAT(std::string(result.status().message()),
                  HasSubstr("photos.tgz: archive is truncated or corrupt at entry"));
    }
  }
}

TEST_F(ArchiveIngestTest, RejectsUnsupportedFormatNamedJpg) {
  absl::StatusOr<IngestResult> result = Ingest({
      {"cats/a.jpg", EncodeJpeg(8, 8, 3, 1)},
      {"cats/x.jpg", "GIF89a\x01\x00\x01\x00"},
      {"dogs/b.jpg", EncodeJpeg(8, 8, 3, 2)},
  });
  ASSERT_TRUE(absl::IsInvalidArgument(result.status())) << result.status();
  EXPECT_EQ(result.status().message(),
            "photos.tgz: cats/x.jpg: unsupported image format GIF; supported: JPEG, PNG");
}

TEST_F(ArchiveIngestTest, RejectsImageOverPixelLimit) {
  IngestOptions options;
  options.max_image_pixels = 1000;
  absl::StatusOr<IngestResult> result = Ingest(
      {
          {"cats/small.png", EncodePng(20, 20, 3, 1)},
          {"cats/huge.png", EncodePng(40, 30, 3, 2)},
          {"dogs/b.png", EncodePng(20, 20, 3, 3)},
      },
      options);
  ASSERT_TRUE(absl::IsInvalidArgument(result.status())) << result.status();
  EXPECT_EQ(result.status().message(),
            "photos.tgz: cats/huge.png: 40x30 = 1200 pixels exceeds the limit of 1000");
}

TEST_F(ArchiveIngestTest, RejectsMoreExamplesThanAllowed) {
  IngestOptions options;
  options.max_examples = 3;
  absl::StatusOr<IngestResult> result = Ingest(
      {
          {"cats/a.png", EncodePng(4, 4, 3, 1)},
          {"cats/b.png", EncodePng(4, 4, 3, 2)},
          {"dogs/c.png", EncodePng(4, 4, 3, 3)},
          {"dogs/d.png", EncodePng(4, 4, 3, 4)},
      },
      options);
  ASSERT_TRUE(absl::IsInvalidArgument(result.status())) << result.status();
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("the limit is 3"));
}

// A path longer than 4 KiB is ignored and listed cut short, not kept.
TEST_F(ArchiveIngestTest, IgnoresOverlongPaths) {
  const std::string long_name = "cats/" + std::string(5000, 'x') + ".png";
  absl::StatusOr<IngestResult> result = Ingest({
      {"cats/a.png", EncodePng(4, 4, 3, 1)},
      {long_name, EncodePng(4, 4, 3, 2)},
      {"dogs/b.png", EncodePng(4, 4, 3, 3)},
  });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->summary.num_examples(), 2);
  ASSERT_EQ(result->summary.report().ignored_files_size(), 1);
  EXPECT_THAT(result->summary.report().ignored_files(0),
              ::testing::EndsWith("... (path over 4096 bytes)"));
  EXPECT_LT(result->summary.report().ignored_files(0).size(), 4200u);
}

// Files that fail to decode cost bookkeeping until the end too: they count.
TEST_F(ArchiveIngestTest, CountsUndecodableFilesAgainstTheLimit) {
  IngestOptions options;
  options.max_examples = 3;
  absl::StatusOr<IngestResult> result = Ingest(
      {
          {"cats/a.png", EncodePng(4, 4, 3, 1)},
          {"dogs/b.png", EncodePng(4, 4, 3, 2)},
          {"dogs/c.jpg", "not a jpeg"},
          {"dogs/d.jpg", "not a jpeg"},
      },
      options);
  ASSERT_TRUE(absl::IsInvalidArgument(result.status())) << result.status();
  EXPECT_THAT(std::string(result.status().message()),
              HasSubstr("more than 3 image files; the limit is 3 images"));
}

// Images outside the class folders are stored as they stream in (the layout
// is known only at the end); many of their bytes are compacted away.
TEST_F(ArchiveIngestTest, CompactsAwayImagesOutsideTheClassFolders) {
  std::vector<ArchiveEntry> entries = {{"top/cats/a.png", EncodePng(4, 4, 3, 1)},
                                       {"top/dogs/b.png", EncodePng(4, 4, 3, 2)}};
  // 2-level paths under the top folder are not class images once the top
  // folder is stripped: 24 noisy PNGs of ~1 MB each.
  for (int i = 0; i < 24; ++i) {
    std::vector<uint8_t> noise(600 * 600 * 3);
    uint32_t state = 99 + i;
    for (uint8_t& v : noise)
      v = static_cast<uint8_t>((state = state * 1664525u + 1013904223u) >> 24);
    entries.push_back(
        {absl::StrCat("top/stray", i, ".png"), test_util::EncodePngPixels(noise, 600, 600, 3)});
  }
  absl::StatusOr<IngestResult> result = Ingest(entries);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->summary.num_examples(), 2);
  EXPECT_EQ(result->summary.report().ignored_files_size(), 24);
  EXPECT_LT(result->summary.stored_bytes(), 3 * 4096);  // header, records, index, trailer
  EXPECT_EQ(result->summary.stored_bytes(),
            static_cast<int64_t>(std::filesystem::file_size(dir_.File("stored.krf"))));
  ASSERT_EQ(result->data.records.size(), 2u);
}

TEST_F(ArchiveIngestTest, ReportsImbalance) {
  std::vector<ArchiveEntry> entries = {{"cats/0.png", EncodePng(4, 4, 3, 0)},
                                       {"cats/1.png", EncodePng(4, 4, 3, 1)}};
  for (int i = 0; i < 6; ++i) {
    entries.push_back({"dogs/" + std::to_string(i) + ".png", EncodePng(4, 4, 3, 10 + i)});
  }
  absl::StatusOr<IngestResult> result = Ingest(entries);
  ASSERT_TRUE(result.ok()) << result.status();
  const v1::DatasetReport& report = result->summary.report();
  EXPECT_DOUBLE_EQ(report.imbalance_ratio(), 3.0);
  EXPECT_THAT(report.warnings(),
              ::testing::Contains(AllOf(HasSubstr("imbalance"), HasSubstr("'dogs' has 6"),
                                        HasSubstr("'cats' has only 2"))));
}

TEST_F(ArchiveIngestTest, ReportsMixedImageSizes) {
  absl::StatusOr<IngestResult> result = Ingest({
      {"cats/a.png", EncodePng(8, 6, 3, 1)},
      {"cats/b.png", EncodePng(8, 6, 3, 2)},
      {"dogs/c.png", EncodePng(8, 6, 1, 3)},
      {"dogs/d.jpg", EncodeJpeg(20, 10, 3, 4)},
  });
  ASSERT_TRUE(result.ok()) << result.status();
  const v1::Dataset& summary = result->summary;
  EXPECT_THAT(summary.input_shape(), ElementsAre(3, 6, 8));
  EXPECT_THAT(summary.report().image_sizes(), ElementsAre("6x8x3", "6x8x1", "10x20x3"));
  EXPECT_THAT(summary.report().warnings(), ::testing::Contains(HasSubstr("3 different sizes")));
  // Each record keeps its own shape.
  EXPECT_EQ(result->data.records[2].channels, 1);
  EXPECT_EQ(result->data.records[3].width, 20);
}

TEST_F(ArchiveIngestTest, StoresFilesAsUploadedAndTinyImagesAsPixels) {
  const std::string jpeg = EncodeJpeg(128, 96, 3, 1);  // 36,864 bytes as pixels
  const std::string png = EncodePng(128, 96, 3, 2);
  const std::string tiny = EncodePng(4, 4, 3, 3);  // 48 bytes as pixels
  ASSERT_LT(jpeg.size(), 128u * 96 * 3);
  ASSERT_GT(tiny.size(), 4u * 4 * 3);
  absl::StatusOr<IngestResult> result = Ingest({
      {"cats/a.jpg", jpeg},
      {"cats/b.png", png},
      {"dogs/c.png", tiny},
  });
  ASSERT_TRUE(result.ok()) << result.status();
  absl::StatusOr<std::unique_ptr<RecordFile>> file = RecordFile::Open(dir_.File("stored.krf"));
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ((*file)->size(), 3u);
  EXPECT_EQ(result->summary.stored_bytes(), static_cast<int64_t>((*file)->file_bytes()));

  // The JPEG is its uploaded bytes; the PNG too unless its pixels are no
  // larger; the tiny PNG is its pixels.
  auto stored = [&](uint64_t i) {
    const absl::StatusOr<absl::Span<const uint8_t>> bytes = (*file)->Read(i);
    EXPECT_TRUE(bytes.ok()) << bytes.status();
    return bytes.ok() ? std::string(bytes->begin(), bytes->end()) : std::string();
  };
  EXPECT_EQ((*file)->info(0).encoding, RecordEncoding::kJpeg);
  EXPECT_EQ(stored(0), jpeg);
  if (png.size() < 128u * 96 * 3) {
    EXPECT_EQ((*file)->info(1).encoding, RecordEncoding::kPng);
    EXPECT_EQ(stored(1), png);
  } else {
    EXPECT_EQ((*file)->info(1).encoding, RecordEncoding::kRaw);
  }
  EXPECT_EQ((*file)->info(2).encoding, RecordEncoding::kRaw);
  const std::vector<uint8_t> tiny_pixels = test_util::MakePixels(4, 4, 3, 3);
  EXPECT_EQ(stored(2), std::string(tiny_pixels.begin(), tiny_pixels.end()));

  // Read back, every record decodes to what the upload decoded to.
  const DecodedDataset& data = result->data;
  ASSERT_EQ(data.records.size(), 3u);
  const std::string files[] = {jpeg, png, tiny};
  for (size_t i = 0; i < 3; ++i) {
    absl::StatusOr<Image> want = DecodeImage(files[i], 1 << 20);
    ASSERT_TRUE(want.ok()) << want.status();
    const DecodedDataset::Record& r = data.records[i];
    ASSERT_EQ(r.height * r.width * r.channels, static_cast<int>(want->pixels.size()));
    EXPECT_EQ(std::vector<uint8_t>(data.pixels.begin() + r.offset,
                                   data.pixels.begin() + r.offset + want->pixels.size()),
              want->pixels)
        << "record " << i;
  }
}

TEST_F(ArchiveIngestTest, StoresImagesAboveTheResolutionCapDownscaledAndSaysSo) {
  const std::string jpeg = EncodeJpeg(400, 300, 3, 1);  // width x height
  const std::string png = EncodePng(200, 600, 3, 2);
  const std::string small = EncodeJpeg(64, 48, 3, 3);
  const std::vector<ArchiveEntry> entries = {
      {"cats/a.jpg", jpeg}, {"cats/b.png", png}, {"dogs/c.jpg", small}};
  IngestOptions capped;
  capped.max_stored_shorter_side = 120;
  absl::StatusOr<IngestResult> result = Ingest(entries, capped);
  ASSERT_TRUE(result.ok()) << result.status();
  const v1::DatasetReport& report = result->summary.report();
  EXPECT_EQ(report.max_stored_shorter_side(), 120);
  EXPECT_EQ(report.downscaled_images(), 2);
  absl::StatusOr<std::unique_ptr<RecordFile>> file = RecordFile::Open(dir_.File("stored.krf"));
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ((*file)->size(), 3u);

  // Each format is kept: the JPEG re-encoded as a JPEG, the PNG as a PNG;
  // the image under the cap is its uploaded bytes.
  const RecordInfo& a = (*file)->info(0);
  EXPECT_EQ(a.encoding, RecordEncoding::kJpeg);
  EXPECT_EQ(a.height, 120);
  EXPECT_EQ(a.width, 160);
  const RecordInfo& b = (*file)->info(1);
  EXPECT_NE(b.encoding, RecordEncoding::kJpeg);  // a PNG, or raw pixels if no larger
  EXPECT_EQ(b.height, 360);
  EXPECT_EQ(b.width, 120);
  const absl::StatusOr<absl::Span<const uint8_t>> c = (*file)->Read(2);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(std::string(c->begin(), c->end()), small);

  // The PNG stays lossless: its record is exactly the area-downscaled source.
  const absl::StatusOr<Image> png_source = DecodeImage(png, 1 << 20);
  ASSERT_TRUE(png_source.ok()) << png_source.status();
  const DecodedDataset::Record& r = result->data.records[1];
  const Image want = AreaDownscale(*png_source, 360, 120);
  EXPECT_EQ(std::vector<uint8_t>(result->data.pixels.begin() + r.offset,
                                 result->data.pixels.begin() + r.offset + want.pixels.size()),
            want.pixels);
  // The JPEG is close to the downscaled source.
  const absl::StatusOr<Image> jpeg_source = DecodeImage(jpeg, 1 << 20);
  ASSERT_TRUE(jpeg_source.ok()) << jpeg_source.status();
  const Image jpeg_want = AreaDownscale(*jpeg_source, 120, 160);
  const DecodedDataset::Record& ra = result->data.records[0];
  double error = 0;
  for (size_t i = 0; i < jpeg_want.pixels.size(); ++i) {
    error += std::abs(static_cast<int>(result->data.pixels[ra.offset + i]) -
                      static_cast<int>(jpeg_want.pixels[i]));
  }
  EXPECT_LT(error / static_cast<double>(jpeg_want.pixels.size()), 4.0);
  // The summary's shapes are the stored ones.
  EXPECT_EQ(result->data.records[0].height, 120);

  // Without the cap the same upload stores every file as it came, and more
  // bytes.
  test_util::TempDir other;
  const std::string path = other.File("upload.bin");
  test_util::WriteBinaryFile(path, test_util::MakeArchive(entries, ArchiveKind::kTarGz));
  absl::StatusOr<IngestResult> uncapped =
      test_util::IngestArchiveAndRead(path, "photos.tgz", {}, other.File("stored.krf"));
  ASSERT_TRUE(uncapped.ok()) << uncapped.status();
  EXPECT_EQ(uncapped->summary.report().max_stored_shorter_side(), 0);
  EXPECT_EQ(uncapped->summary.report().downscaled_images(), 0);
  EXPECT_GT(uncapped->summary.stored_bytes(), result->summary.stored_bytes());
}

// A /proc/self/status field in bytes: VmHWM (the peak resident set) or VmRSS.
int64_t StatusBytes(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1)) * 1024;
  }
  return -1;
}

// Images stream from the archive into the record file: ingesting 1,200
// images that decode to 369 MB raises the peak RSS by far less than that.
TEST_F(ArchiveIngestTest, IngestsInBoundedMemory) {
  constexpr int kImages = 1200;
  constexpr int kSide = 320;
  constexpr int64_t kDecoded = int64_t{kImages} * kSide * kSide * 3;
  constexpr int64_t kBound = 64 << 20;
  {
    std::vector<ArchiveEntry> entries;
    const std::string jpeg[2] = {EncodeJpeg(kSide, kSide, 3, 1, 75),
                                 EncodeJpeg(kSide, kSide, 3, 2, 75)};
    for (int i = 0; i < kImages; ++i) {
      entries.push_back({absl::StrCat(i % 2 == 0 ? "cats/" : "dogs/", i, ".jpg"), jpeg[i % 2]});
    }
    test_util::WriteBinaryFile(dir_.File("upload.bin"),
                               test_util::MakeArchive(entries, ArchiveKind::kTar));
  }
  // Hands the memory freed so far back to the kernel, which a heap that keeps
  // freed memory (CTest's MALLOC_TRIM_THRESHOLD_) would otherwise let the
  // ingest reuse without raising VmHWM; then resets VmHWM to the current RSS
  // (Linux clear_refs "5").
  malloc_trim(0);
  {
    std::ofstream clear("/proc/self/clear_refs");
    clear << "5";
    clear.close();
    ASSERT_TRUE(clear.good()) << "cannot reset the peak RSS through /proc/self/clear_refs";
  }
  const int64_t before = StatusBytes("VmHWM");
  ASSERT_LT(before - StatusBytes("VmRSS"), 1 << 20) << "the peak RSS was not reset";
  const absl::StatusOr<v1::Dataset> summary = IngestImageFolderArchive(
      dir_.File("upload.bin"), "big.tar", IngestOptions{}, dir_.File("big.krf"));
  const int64_t growth = StatusBytes("VmHWM") - before;
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->num_examples(), kImages);
  EXPECT_EQ(summary->report().duplicate_count(), kImages - 2);
  EXPECT_LT(growth, kBound) << "decoded bytes: " << kDecoded;
  std::printf("ingested %d images (%lld decoded bytes); peak RSS grew by %lld bytes\n", kImages,
              static_cast<long long>(kDecoded), static_cast<long long>(growth));  // NOLINT
}

TEST_F(ArchiveIngestTest, FailedIngestLeavesNoFile) {
  absl::StatusOr<IngestResult> result = Ingest({
      {"cats/a.jpg", EncodeJpeg(64, 64, 3, 1)},
      {"cats/b.jpg", EncodeJpeg(64, 64, 3, 2)},
  });
  ASSERT_TRUE(absl::IsInvalidArgument(result.status())) << result.status();
  std::vector<std::string> left;
  for (const auto& entry : std::filesystem::directory_iterator(dir_.path())) {
    left.push_back(entry.path().filename().string());
  }
  EXPECT_THAT(left, ElementsAre("upload.bin"));
}

TEST_F(ArchiveIngestTest, MissingArchiveIsNotFound) {
  EXPECT_TRUE(absl::IsNotFound(
      IngestImageFolderArchive(dir_.File("nope.tgz"), "nope.tgz", {}, dir_.File("nope.krf"))
          .status()));
}

TEST_F(ArchiveIngestTest, OnlyInProcessCompressionFiltersAreAccepted) {
  // A tar through libarchive's "compress" (.Z) filter: a real format, but not
  // one of the filters uploads accept (lrzip, lzop and others would run an
  // external program; the list is explicit).
  const std::string tar = test_util::MakeArchive(
      {{"dogs/d1.png", EncodePng(8, 8, 3, 1)}, {"cats/c1.png", EncodePng(8, 8, 3, 2)}},
      ArchiveKind::kTar);
  archive* w = archive_write_new();
  archive_write_set_format_raw(w);
  archive_write_add_filter_compress(w);
  std::string compressed(tar.size() * 2 + 1024, '\0');
  size_t used = 0;
  ASSERT_EQ(archive_write_open_memory(w, compressed.data(), compressed.size(), &used), ARCHIVE_OK);
  archive_entry* e = archive_entry_new();
  archive_entry_set_filetype(e, AE_IFREG);
  archive_entry_set_size(e, static_cast<la_int64_t>(tar.size()));
  ASSERT_EQ(archive_write_header(w, e), ARCHIVE_OK);
  ASSERT_EQ(archive_write_data(w, tar.data(), tar.size()), static_cast<la_ssize_t>(tar.size()));
  archive_entry_free(e);
  archive_write_close(w);
  archive_write_free(w);
  compressed.resize(used);
  absl::StatusOr<IngestResult> result = Ingest(compressed);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(result.status().message(), HasSubstr("not a tar or zip archive"));
  // The same tar, gzip-compressed, is accepted.
  EXPECT_TRUE(Ingest(test_util::MakeArchive({{"dogs/d1.png", EncodePng(8, 8, 3, 1)},
                                             {"cats/c1.png", EncodePng(8, 8, 3, 2)}},
                                            ArchiveKind::kTarGz))
                  .ok());
}

}  // namespace
}  // namespace kaizen::datasets
