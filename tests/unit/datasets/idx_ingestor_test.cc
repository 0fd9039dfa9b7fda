// IngestIdx: tiny hand-written IDX files (plain and gzip) and the real
// Fashion-MNIST training set.
#include "server/datasets/idx_ingestor.h"

#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/datasets/record_file.h"
#include "tests/test_util/bytes.h"
#include "tests/test_util/fashion_mnist.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::datasets {
namespace {

using test_util::IdxImages;
using test_util::IdxLabels;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

void WriteGzipFile(const std::string& path, const std::string& data) {
  gzFile file = gzopen(path.c_str(), "wb");
  ASSERT_NE(file, nullptr);
  ASSERT_EQ(gzwrite(file, data.data(), static_cast<unsigned>(data.size())),
            static_cast<int>(data.size()));
  ASSERT_EQ(gzclose(file), Z_OK);
}

// Labels 0, 1, 0, 1, ...
std::vector<uint8_t> AlternatingLabels(size_t n) {
  std::vector<uint8_t> labels(n);
  for (size_t i = 0; i < n; ++i) labels[i] = static_cast<uint8_t>(i % 2);
  return labels;
}

class IdxIngestTest : public ::testing::Test {
 protected:
  absl::StatusOr<IngestResult> Ingest(const std::string& images, const std::string& labels,
                                      const std::vector<std::string>& class_names = {},
                                      const IngestOptions& options = {}) {
    test_util::WriteBinaryFile(dir_.File("images"), images);
    test_util::WriteBinaryFile(dir_.File("labels"), labels);
    return IngestIdx(dir_.File("images"), dir_.File("labels"), class_names,
                     "train-images-idx3-ubyte", "train-labels-idx1-ubyte", options);
  }

  test_util::TempDir dir_;
};

TEST_F(IdxIngestTest, IngestsPlainAndGzipIdx) {
  const std::string images = IdxImages(5, 3, 2);
  const std::string labels = IdxLabels({1, 0, 2, 1, 1});
  for (bool gzip : {false, true}) {
    SCOPED_TRACE(gzip);
    if (gzip) {
      WriteGzipFile(dir_.File("i.gz"), images);
      WriteGzipFile(dir_.File("l.gz"), labels);
    } else {
      test_util::WriteBinaryFile(dir_.File("i.gz"), images);
      test_util::WriteBinaryFile(dir_.File("l.gz"), labels);
    }
    absl::StatusOr<IngestResult> result =
        IngestIdx(dir_.File("i.gz"), dir_.File("l.gz"), {}, "i.gz", "l.gz", {});
    ASSERT_TRUE(result.ok()) << result.status();
    const v1::Dataset& summary = result->summary;
    EXPECT_EQ(summary.num_examples(), 5);
    EXPECT_THAT(summary.input_shape(), ElementsAre(1, 3, 2));
    ASSERT_EQ(summary.classes_size(), 3);
    EXPECT_EQ(summary.classes(0).class_name(), "0");
    EXPECT_EQ(summary.classes(0).count(), 1);
    EXPECT_EQ(summary.classes(1).count(), 3);
    EXPECT_EQ(summary.classes(2).label(), 2);
    EXPECT_DOUBLE_EQ(summary.report().imbalance_ratio(), 3.0);

    const DecodedDataset& data = result->data;
    ASSERT_EQ(data.records.size(), 5u);
    EXPECT_EQ(data.records[3].label, 1);
    EXPECT_EQ(data.records[3].offset, 18);
    EXPECT_EQ(data.records[3].channels, 1);
    EXPECT_EQ(data.pixels[18], 3);
    EXPECT_EQ(data.pixels.size(), 30u);
  }
}

TEST_F(IdxIngestTest, UsesGivenClassNames) {
  absl::StatusOr<IngestResult> result =
      Ingest(IdxImages(4, 2, 2), IdxLabels({0, 1, 0, 1}), {"shirt", "shoe", "bag"});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(result->data.class_names, ElementsAre("shirt", "shoe", "bag"));
  ASSERT_EQ(result->summary.classes_size(), 3);
  EXPECT_EQ(result->summary.classes(1).class_name(), "shoe");
  EXPECT_EQ(result->summary.classes(2).count(), 0);
  EXPECT_THAT(result->summary.report().warnings(),
              ::testing::Contains(HasSubstr("'bag' (label 2) has no examples")));
}

TEST_F(IdxIngestTest, RejectsLabelOutOfRange) {
  absl::StatusOr<IngestResult> result =
      Ingest(IdxImages(3, 2, 2), IdxLabels({0, 1, 2}), {"shirt", "shoe"});
  ASSERT_TRUE(absl::IsInvalidArgument(result.status())) << result.status();
  EXPECT_EQ(result.status().message(),
            "train-labels-idx1-ubyte: label 2 (example 2) is out of range: 2 class names were "
            "given, for labels 0..1");
}

TEST_F(IdxIngestTest, RejectsBadClassNames) {
  EXPECT_TRUE(
      absl::IsInvalidArgument(Ingest(IdxImages(2, 2, 2), IdxLabels({0, 1}), {"a", "a"}).status()));
  EXPECT_TRUE(
      absl::IsInvalidArgument(Ingest(IdxImages(2, 2, 2), IdxLabels({0, 1}), {"a", ""}).status()));
}

TEST_F(IdxIngestTest, RejectsTruncatedIdx) {
  const std::string images = IdxImages(5, 4, 4);
  absl::StatusOr<IngestResult> result =
      Ingest(images.substr(0, images.size() - 40), IdxLabels({0, 1, 0, 1, 0}));
  ASSERT_TRUE(absl::IsInvalidArgument(result.status())) << result.status();
  EXPECT_EQ(result.status().message(),
            "train-images-idx3-ubyte: truncated: header says 5 images of 4x4 but only 40 bytes "
            "of pixel data");

  // A gzip stream cut short reads as truncated too.
  std::string gz_path = dir_.File("cut.gz");
  WriteGzipFile(gz_path, IdxImages(200, 28, 28));
  std::string gz = test_util::ReadBinaryFile(gz_path);
  test_util::WriteBinaryFile(gz_path, gz.substr(0, gz.size() / 2));
  test_util::WriteBinaryFile(dir_.File("labels"), IdxLabels(AlternatingLabels(200)));
  absl::StatusOr<IngestResult> cut =
      IngestIdx(gz_path, dir_.File("labels"), {}, "cut.gz", "labels", {});
  ASSERT_TRUE(absl::IsInvalidArgument(cut.status())) << cut.status();
  EXPECT_THAT(std::string(cut.status().message()),
              HasSubstr("cut.gz: truncated: header says 200 images"));

  absl::StatusOr<IngestResult> labels = Ingest(IdxImages(5, 4, 4), IdxLabels({0, 1}).substr(0, 9));
  ASSERT_TRUE(absl::IsInvalidArgument(labels.status())) << labels.status();
}

TEST_F(IdxIngestTest, AGzipStreamMustEndWithItsTrailer) {
  // The payload is complete but the CRC-32 and length that close the gzip
  // member are missing: the file is cut, even though every pixel arrived.
  WriteGzipFile(dir_.File("i.gz"), IdxImages(50, 28, 28));
  std::string gz = test_util::ReadBinaryFile(dir_.File("i.gz"));
  test_util::WriteBinaryFile(dir_.File("i.gz"), gz.substr(0, gz.size() - 8));
  test_util::WriteBinaryFile(dir_.File("labels"), IdxLabels(AlternatingLabels(50)));
  absl::StatusOr<IngestResult> cut =
      IngestIdx(dir_.File("i.gz"), dir_.File("labels"), {}, "i.gz", "labels", {});
  ASSERT_TRUE(absl::IsInvalidArgument(cut.status())) << cut.status();
  EXPECT_EQ(cut.status().message(),
            "i.gz: truncated: the gzip data ends before its trailer (the CRC-32 and length that "
            "close it)");
}

TEST_F(IdxIngestTest, ReadsAFileOfSeveralGzipMembers) {
  // gzip -c header-and-half other-half > images.gz: two members, one stream.
  const std::string images = IdxImages(6, 5, 5);
  const size_t half = images.size() / 2;
  WriteGzipFile(dir_.File("a.gz"), images.substr(0, half));
  WriteGzipFile(dir_.File("b.gz"), images.substr(half));
  test_util::WriteBinaryFile(dir_.File("i.gz"), test_util::ReadBinaryFile(dir_.File("a.gz")) +
                                                    test_util::ReadBinaryFile(dir_.File("b.gz")));
  test_util::WriteBinaryFile(dir_.File("labels"), IdxLabels(AlternatingLabels(6)));
  absl::StatusOr<IngestResult> result =
      IngestIdx(dir_.File("i.gz"), dir_.File("labels"), {}, "i.gz", "labels", {});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->data.pixels.size(), 150u);
  EXPECT_EQ(result->data.pixels[149], 5);
}

TEST_F(IdxIngestTest, StoresTheRecordFileAsTheSequentialWriterWould) {
  WriteGzipFile(dir_.File("i.gz"), IdxImages(12'000, 28, 28));
  test_util::WriteBinaryFile(dir_.File("labels"), IdxLabels(AlternatingLabels(12'000)));
  const std::string stored_path = dir_.File("stored.krf");
  absl::StatusOr<IngestResult> result =
      IngestIdx(dir_.File("i.gz"), dir_.File("labels"), {}, "i.gz", "labels", {}, stored_path);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_TRUE(WriteRawRecordFile(dir_.File("sequential.krf"), result->data).ok());
  const std::string stored = test_util::ReadBinaryFile(stored_path);
  EXPECT_EQ(result->summary.stored_bytes(), static_cast<int64_t>(stored.size()));
  EXPECT_TRUE(stored == test_util::ReadBinaryFile(dir_.File("sequential.krf")))
      << "the record file written beside the report differs from the one written alone";
  EXPECT_EQ(result->summary.report().duplicate_count(), 12'000 - 256);
}

TEST_F(IdxIngestTest, LeavesNoRecordFileWhenDecodingFailsAfterTheLastPixel) {
  // Every image decodes; the file then fails a check (trailing data, a cut
  // gzip trailer), so nothing may be stored.
  const std::string labels = IdxLabels(AlternatingLabels(3000));
  WriteGzipFile(dir_.File("i.gz"), IdxImages(3000, 28, 28) + "extra");
  const std::string trailing = test_util::ReadBinaryFile(dir_.File("i.gz"));
  WriteGzipFile(dir_.File("i.gz"), IdxImages(3000, 28, 28));
  const std::string whole = test_util::ReadBinaryFile(dir_.File("i.gz"));
  for (const std::string& images :
       {trailing, whole.substr(0, whole.size() - 4), whole.substr(0, whole.size() / 2)}) {
    test_util::WriteBinaryFile(dir_.File("i.gz"), images);
    test_util::WriteBinaryFile(dir_.File("labels"), labels);
    absl::StatusOr<IngestResult> result = IngestIdx(dir_.File("i.gz"), dir_.File("labels"), {},
                                                    "i.gz", "labels", {}, dir_.File("out.krf"));
    ASSERT_TRUE(absl::IsInvalidArgument(result.status())) << result.status();
    EXPECT_EQ(test_util::CountFiles(dir_.path()), 2u) << "a record file or its temporary stayed";
  }
  // A record file that cannot be created fails the ingest with its reason.
  test_util::WriteBinaryFile(dir_.File("i.gz"), whole);
  absl::StatusOr<IngestResult> unwritable = IngestIdx(
      dir_.File("i.gz"), dir_.File("labels"), {}, "i.gz", "labels", {}, dir_.File("no/out.krf"));
  ASSERT_FALSE(unwritable.ok());
  EXPECT_THAT(std::string(unwritable.status().message()), HasSubstr("cannot create"));
}

// An upload decodes its IDX pair while it arrives: the images whole first,
// then the labels (the order they are sent in), waiting for each file to
// grow; and nothing is stored until the caller's verdict allows it.
TEST_F(IdxIngestTest, ReadsTheImagesWholeBeforeTheLabelsWhileTheyGrow) {
  // Noise, so that the gzip file is about as large as its pixels (2.4 MB).
  std::string raw = IdxImages(3000, 28, 28);
  uint32_t state = 12345;
  for (size_t i = 16; i < raw.size(); ++i) {
    state = state * 1103515245u + 12345u;
    raw[i] = static_cast<char>(state >> 24);
  }
  WriteGzipFile(dir_.File("i.gz"), raw);
  const std::string images = test_util::ReadBinaryFile(dir_.File("i.gz"));
  const std::string labels = IdxLabels(AlternatingLabels(3000));
  // A writer that reveals the two files piece by piece, in sending order,
  // each time a reader waits.
  struct Sent {
    std::string log;  // 'i' or 'l': which file a reader waited on
    size_t images = 0;
    size_t labels = 0;
  } sent;
  test_util::WriteBinaryFile(dir_.File("i.gz"), "");
  test_util::WriteBinaryFile(dir_.File("labels"), "");
  const auto grow = [&](char which) {
    return [&, which](int64_t have) -> absl::StatusOr<bool> {
      sent.log.push_back(which);
      const bool is_images = which == 'i';
      const std::string& whole = is_images ? images : labels;
      size_t& shown = is_images ? sent.images : sent.labels;
      if (static_cast<size_t>(have) < shown) return true;
      if (shown == whole.size()) return false;
      if (!is_images && sent.images < images.size()) {
        return absl::FailedPreconditionError("read the labels before the images were complete");
      }
      const size_t next = std::min(whole.size(), shown + 65'537);
      std::FILE* f = std::fopen(dir_.File(is_images ? "i.gz" : "labels").c_str(), "ab");
      std::fwrite(whole.data() + shown, 1, next - shown, f);
      std::fclose(f);
      shown = next;
      return true;
    };
  };
  IdxFile image_file{dir_.File("i.gz"), "i.gz", grow('i'), static_cast<int64_t>(images.size())};
  IdxFile label_file{dir_.File("labels"), "labels", grow('l'), static_cast<int64_t>(labels.size())};
  int verdicts = 0;
  absl::StatusOr<IngestResult> result =
      IngestIdx(image_file, label_file, {}, {}, dir_.File("out.krf"), [&] {
        ++verdicts;
        EXPECT_FALSE(std::ifstream(dir_.File("out.krf")).good()) << "stored before the verdict";
        return absl::OkStatus();
      });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(verdicts, 1);
  EXPECT_EQ(sent.images, images.size());
  EXPECT_EQ(sent.labels, labels.size());
  EXPECT_EQ(result->data.records.size(), 3000u);
  EXPECT_EQ(result->data.records[2999].label, 1);
  EXPECT_TRUE(std::string(result->data.pixels.begin(), result->data.pixels.end()) ==
              raw.substr(16));
  EXPECT_EQ(result->summary.stored_bytes(),
            static_cast<int64_t>(test_util::ReadBinaryFile(dir_.File("out.krf")).size()));
  EXPECT_GT(sent.log.size(), images.size() / 65'537) << "the images were not read as they grew";
  EXPECT_EQ(sent.log.find('i', sent.log.find('l')), std::string::npos) << sent.log;

  // A refusing verdict (a checksum mismatch) ends the ingest with its error
  // and stores nothing; so does a writer that gave up.
  std::remove(dir_.File("out.krf").c_str());
  absl::StatusOr<IngestResult> refused =
      IngestIdx(IdxFile{dir_.File("i.gz"), "i.gz"}, IdxFile{dir_.File("labels"), "labels"}, {}, {},
                dir_.File("out.krf"), [] { return absl::CancelledError("sha256 mismatch"); });
  EXPECT_EQ(refused.status(), absl::CancelledError("sha256 mismatch"));
  IdxFile abandoned{dir_.File("i.gz"), "i.gz", [](int64_t) -> absl::StatusOr<bool> {
                      return absl::CancelledError("the upload ended");
                    }};
  EXPECT_EQ(
      IngestIdx(abandoned, IdxFile{dir_.File("labels"), "labels"}, {}, {}, dir_.File("out.krf"))
          .status(),
      absl::CancelledError("the upload ended"));
  EXPECT_EQ(test_util::CountFiles(dir_.path()), 2u) << "a record file or its temporary stayed";
}

// While the images still arrive, decoding keeps within the budget of what
// has arrived: images that compress well wait for more of the file rather
// than decode far ahead of it (a stalled stream holds no more memory than a
// complete upload of its size could).
TEST_F(IdxIngestTest, DecodingAGrowingFileKeepsWithinTheBudgetOfWhatArrived) {
  // 20,000 blank images (15.7 MB in a few KB of gzip), then 2,000 of noise,
  // which make the file 1.6 MB: within a ratio of 20 as a whole.
  std::string raw = IdxImages(22'000, 28, 28);
  std::fill(raw.begin() + 16, raw.begin() + 16 + 20'000 * 784, '\0');
  uint32_t state = 12345;
  for (size_t i = 16 + 20'000 * 784; i < raw.size(); ++i) {
    state = state * 1103515245u + 12345u;
    raw[i] = static_cast<char>(state >> 24);
  }
  WriteGzipFile(dir_.File("i.gz"), raw);
  const std::string images = test_util::ReadBinaryFile(dir_.File("i.gz"));
  test_util::WriteBinaryFile(dir_.File("labels"), IdxLabels(AlternatingLabels(22'000)));
  test_util::WriteBinaryFile(dir_.File("i.gz"), "");
  size_t shown = 0;
  std::vector<int64_t> ahead;  // the `have` of each wait past what had arrived
  const auto grow = [&](int64_t have) -> absl::StatusOr<bool> {
    if (static_cast<size_t>(have) > shown) ahead.push_back(have);
    while (static_cast<size_t>(have) >= shown && shown < images.size()) {
      const size_t next = std::min(images.size(), shown + 1'000);
      std::FILE* f = std::fopen(dir_.File("i.gz").c_str(), "ab");
      std::fwrite(images.data() + shown, 1, next - shown, f);
      std::fclose(f);
      shown = next;
    }
    return static_cast<size_t>(have) < shown;
  };
  IngestOptions options;
  options.budget.max_ratio = 20;
  options.budget.ratio_allowance_bytes = 1 << 20;
  absl::StatusOr<IngestResult> result =
      IngestIdx(IdxFile{dir_.File("i.gz"), "i.gz", grow, static_cast<int64_t>(images.size())},
                IdxFile{dir_.File("labels"), "labels"}, {}, options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(std::string(result->data.pixels.begin(), result->data.pixels.end()) ==
              raw.substr(16));
  // The reader asks only for the byte after those it has read. 4 MiB decoded
  // needs 4 MiB / 20 = 209,716 bytes of the file, which the reader's first
  // 256 KiB held; 8 MiB needs 419,431, past them: a wait for the file to
  // hold more than 419,430.
  ASSERT_FALSE(ahead.empty()) << "decoding never waited for the file";
  EXPECT_EQ(ahead[0], 419'430);
}

TEST_F(IdxIngestTest, RejectsTrailingData) {
  absl::StatusOr<IngestResult> result = Ingest(IdxImages(2, 2, 2) + "extra", IdxLabels({0, 1}));
  ASSERT_TRUE(absl::IsInvalidArgument(result.status())) << result.status();
  EXPECT_THAT(std::string(result.status().message()),
              HasSubstr("more data than its header describes"));
}

TEST_F(IdxIngestTest, RejectsBadMagic) {
  std::string images = IdxImages(2, 2, 2);
  images[3] = 0x02;
  absl::StatusOr<IngestResult> result = Ingest(images, IdxLabels({0, 1}));
  ASSERT_TRUE(absl::IsInvalidArgument(result.status())) << result.status();
  EXPECT_EQ(result.status().message(),
            "train-images-idx3-ubyte: not an IDX images file: magic number is 0x00000802, "
            "expected 0x00000803 (idx3-ubyte images)");

  absl::StatusOr<IngestResult> swapped = Ingest(IdxLabels({0, 1}), IdxImages(2, 2, 2));
  ASSERT_TRUE(absl::IsInvalidArgument(swapped.status())) << swapped.status();
  EXPECT_THAT(std::string(swapped.status().message()), HasSubstr("swapped"));

  absl::StatusOr<IngestResult> tiny = Ingest("ab", IdxLabels({0, 1}));
  ASSERT_TRUE(absl::IsInvalidArgument(tiny.status())) << tiny.status();
  EXPECT_THAT(std::string(tiny.status().message()), HasSubstr("not an IDX file"));
}

TEST_F(IdxIngestTest, RejectsCountMismatch) {
  absl::StatusOr<IngestResult> result = Ingest(IdxImages(3, 2, 2), IdxLabels({0, 1}));
  ASSERT_TRUE(absl::IsInvalidArgument(result.status())) << result.status();
  EXPECT_EQ(result.status().message(),
            "train-images-idx3-ubyte holds 3 images but train-labels-idx1-ubyte holds 2 labels; "
            "they must match one to one");
}

TEST_F(IdxIngestTest, RejectsSingleLabel) {
  absl::StatusOr<IngestResult> result = Ingest(IdxImages(3, 2, 2), IdxLabels({4, 4, 4}));
  ASSERT_TRUE(absl::IsInvalidArgument(result.status())) << result.status();
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("only one label (4)"));
}

TEST_F(IdxIngestTest, RejectsHeaderOverLimitsWithoutReadingData) {
  IngestOptions options;
  options.max_examples = 2;
  absl::StatusOr<IngestResult> many = Ingest(IdxImages(3, 2, 2), IdxLabels({0, 1, 0}), {}, options);
  ASSERT_TRUE(absl::IsInvalidArgument(many.status())) << many.status();
  EXPECT_THAT(std::string(many.status().message()), HasSubstr("the limit is 2"));

  // A header claiming 4 billion images must not allocate anything like that.
  std::string huge;
  test_util::AppendBigEndian32(&huge, 0x00000803);
  test_util::AppendBigEndian32(&huge, 4'000'000);
  test_util::AppendBigEndian32(&huge, 1000);
  test_util::AppendBigEndian32(&huge, 1000);
  std::string labels;
  test_util::AppendBigEndian32(&labels, 0x00000801);
  test_util::AppendBigEndian32(&labels, 4'000'000);
  // Refused by the decode budget from the header alone (4 TB declared by 24
  // bytes), before the labels are read.
  absl::StatusOr<IngestResult> big = Ingest(huge, labels);
  ASSERT_TRUE(absl::IsResourceExhausted(big.status())) << big.status();
  EXPECT_THAT(std::string(big.status().message()), HasSubstr("4000000 images of 1000x1000"));
}

TEST_F(IdxIngestTest, ReportsDuplicateImages) {
  std::string images = IdxImages(4, 2, 2);
  // Image 3 becomes a copy of image 1.
  std::fill(images.begin() + 16 + 12, images.end(), static_cast<char>(1));
  absl::StatusOr<IngestResult> result = Ingest(images, IdxLabels({0, 1, 0, 1}));
  ASSERT_TRUE(result.ok()) << result.status();
  const v1::DatasetReport& report = result->summary.report();
  EXPECT_EQ(report.duplicate_count(), 1);
  ASSERT_EQ(report.duplicates_size(), 1);
  EXPECT_EQ(report.duplicates(0).path(), "train-images-idx3-ubyte[3]");
  EXPECT_EQ(report.duplicates(0).duplicate_of(), "train-images-idx3-ubyte[1]");
}

TEST_F(IdxIngestTest, MissingFileIsNotFound) {
  EXPECT_TRUE(absl::IsNotFound(
      IngestIdx(dir_.File("no-images"), dir_.File("no-labels"), {}, "i", "l", {}).status()));
}

TEST(FashionMnistTest, IngestsFashionMnistTrainingSet) {
  const std::string dir = absl::StrCat(test_util::kFashionDir, "/");
  struct stat st;
  if (::stat((dir + "train-images-idx3-ubyte.gz").c_str(), &st) != 0) {
    GTEST_SKIP() << "Fashion-MNIST is not installed under " << dir;
  }
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<IngestResult> result =
      IngestIdx(dir + "train-images-idx3-ubyte.gz", dir + "train-labels-idx1-ubyte.gz", {},
                "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", {});
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(result.ok()) << result.status();
  std::printf("Fashion-MNIST training set ingested in %.3f s\n", seconds);
  ::testing::Test::RecordProperty("ingest_seconds", std::to_string(seconds));

  const v1::Dataset& summary = result->summary;
  EXPECT_EQ(summary.num_examples(), 60000);
  EXPECT_THAT(summary.input_shape(), ElementsAre(1, 28, 28));
  ASSERT_EQ(summary.classes_size(), 10);
  for (int label = 0; label < 10; ++label) {
    EXPECT_EQ(summary.classes(label).label(), label);
    EXPECT_EQ(summary.classes(label).class_name(), std::to_string(label));
    EXPECT_EQ(summary.classes(label).count(), 6000);
  }
  EXPECT_DOUBLE_EQ(summary.report().imbalance_ratio(), 1.0);
  EXPECT_EQ(summary.report().image_sizes_size(), 0);
  EXPECT_EQ(result->data.pixels.size(), 60000u * 28 * 28);
  // Generous bound for a shared, loaded build machine; typically far less.
  EXPECT_LT(seconds, 2.0);
}

// Only a header: n images of rows x cols (big-endian), then `payload`.
std::string IdxHeader(uint32_t n, uint32_t rows, uint32_t cols, const std::string& payload = "") {
  std::string out;
  test_util::AppendBigEndian32(&out, 0x00000803);
  test_util::AppendBigEndian32(&out, n);
  test_util::AppendBigEndian32(&out, rows);
  test_util::AppendBigEndian32(&out, cols);
  return out + payload;
}

TEST_F(IdxIngestTest, RejectsDimensionsWhoseProductWrapsAround) {
  // 2 x 2147549185 x 4294836226 is 2^64 + 4: in 64-bit arithmetic the header
  // describes 4 bytes of pixels, which this 20-byte file holds. Unchecked, it
  // was accepted with negative image sizes and crashed while hashing them.
  const absl::StatusOr<IngestResult> result =
      Ingest(IdxHeader(2, 2147549185u, 4294836226u, "abcd"), IdxLabels({0, 1}));
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("train-images-idx3-ubyte"));
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("(rows) is 2147549185"));
}

TEST_F(IdxIngestTest, RejectsHugeRowsTimesColsInA32ByteFile) {
  const absl::StatusOr<IngestResult> result =
      Ingest(IdxHeader(2, 65535, 65535, std::string(16, 'x')), IdxLabels({0, 1}));
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(result.status().message()),
              HasSubstr("65535x65535 pixels per image (header dimensions 2 and 1) exceeds"));
}

TEST_F(IdxIngestTest, RefusesAPayloadPastTheDecodeBudgetBeforeReadingIt) {
  // 1,000 images of 4000 x 4000 (16 GB) declared by a 32-byte file: refused
  // from the header, nothing read or allocated.
  std::vector<uint8_t> labels = AlternatingLabels(1000);
  const auto start = std::chrono::steady_clock::now();
  const absl::StatusOr<IngestResult> result =
      Ingest(IdxHeader(1000, 4000, 4000, std::string(16, 'x')), IdxLabels(labels));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("decode budget"));
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("1000 images of 4000x4000"));
  EXPECT_LT(seconds, 1.0);
}

TEST_F(IdxIngestTest, GzipPayloadCountsAgainstTheBudgetRatio) {
  // 200 images of 100x100 zeros: 2 MB of pixels from a few KB of gzip.
  test_util::WriteBinaryFile(dir_.File("labels"), IdxLabels(AlternatingLabels(200)));
  WriteGzipFile(dir_.File("images"),
                IdxImages(200, 100, 100).substr(0, 16) + std::string(200 * 100 * 100, '\0'));
  IngestOptions options;
  options.budget.max_ratio = 20;
  options.budget.ratio_allowance_bytes = 0;
  const absl::StatusOr<IngestResult> result =
      IngestIdx(dir_.File("images"), dir_.File("labels"), {}, "train-images-idx3-ubyte.gz",
                "train-labels-idx1-ubyte", options);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kResourceExhausted);
  options.budget.max_ratio = 1e6;
  EXPECT_TRUE(IngestIdx(dir_.File("images"), dir_.File("labels"), {}, "i", "l", options).ok());
}

}  // namespace
}  // namespace kaizen::datasets
