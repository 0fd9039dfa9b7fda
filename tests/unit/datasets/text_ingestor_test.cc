// IngestTextTable: small hand-written tables (plain and gzip) into record
// files of text records, and their reports.
#include "server/datasets/text_ingestor.h"

#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/datasets/record_file.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/temp_dir.h"
#include "tests/test_util/wordnet.h"
#include "tests/test_util/zip_builder.h"

namespace kaizen::datasets {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class TextIngestorTest : public ::testing::Test {
 protected:
  absl::StatusOr<v1::Dataset> Ingest(const std::string& bytes, TextTableFormat format,
                                     std::vector<std::string> class_names = {},
                                     IngestOptions options = {}) {
    const std::string path = dir_.File("upload");
    test_util::WriteBinaryFile(path, bytes);
    TextTableOptions table;
    table.format = format;
    return IngestTextTable(path, "reviews.csv", table, class_names, options, records_);
  }

  std::vector<std::pair<std::string, std::string>> Stored() {
    auto file = RecordFile::Open(records_);
    EXPECT_TRUE(file.ok()) << file.status();
    std::vector<std::pair<std::string, std::string>> out;
    for (uint64_t i = 0; i < (*file)->size(); ++i) {
      auto text = (*file)->ReadText(i);
      EXPECT_TRUE(text.ok()) << text.status();
      out.emplace_back(*text, (*file)->class_names()[(*file)->info(i).label]);
    }
    return out;
  }

  test_util::TempDir dir_;
  std::string records_ = dir_.File("text.krf");
};

TEST_F(TextIngestorTest, StoresUsableRowsAndReportsWhatItKeptOut) {
  const std::string long_text(300, 'w');
  const std::string csv =
      absl::StrCat("text,label\n",
                   "a fine film,10\n",               // 2
                   "dull,2\n",                       // 3
                   "   ,10\n",                       // 4: empty text
                   "bad \xff,2\n",                   // 5: not UTF-8
                   "dull,10\n",                      // 6: duplicate of 3, other label
                   "a fine film,10\n",               // 7: duplicate of 2
                   long_text, ",2\n",                // 8
                   "caf\xc3\xa9 \xe2\x82\xac,1\n");  // 9: 6 code points, 9 bytes
  absl::StatusOr<v1::Dataset> d = Ingest(csv, TextTableFormat::kCsv);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->num_examples(), 6);
  // Integer labels sort by value.
  ASSERT_EQ(d->classes_size(), 3);
  EXPECT_EQ(d->classes(0).class_name(), "1");
  EXPECT_EQ(d->classes(1).class_name(), "2");
  EXPECT_EQ(d->classes(2).class_name(), "10");
  EXPECT_EQ(d->classes(2).count(), 3);
  EXPECT_TRUE(d->input_shape().empty());
  EXPECT_GT(d->stored_bytes(), 0);

  const v1::DatasetReport& report = d->report();
  EXPECT_EQ(report.text().rows_read(), 8);
  EXPECT_EQ(report.text().rejected_rows(), 1);
  EXPECT_EQ(report.text().empty_rows(), 1);
  EXPECT_EQ(report.duplicate_count(), 2);
  EXPECT_EQ(report.text().conflicting_duplicates(), 1);
  ASSERT_EQ(report.failed_files_size(), 1);
  EXPECT_EQ(report.failed_files(0).path(), "reviews.csv line 5");
  EXPECT_THAT(report.failed_files(0).reason(), HasSubstr("0xff is not UTF-8"));
  ASSERT_EQ(report.duplicates_size(), 2);
  EXPECT_EQ(report.duplicates(0).path(), "reviews.csv line 6");
  EXPECT_EQ(report.duplicates(0).duplicate_of(), "reviews.csv line 3");
  EXPECT_EQ(report.text().length_min(), 4);
  EXPECT_EQ(report.text().length_max(), 300);
  EXPECT_EQ(report.text().length_p50(), 11);
  EXPECT_EQ(report.text().text_bytes(), 11 + 4 + 4 + 11 + 300 + 9);
  EXPECT_THAT(absl::StrJoin(report.warnings(), "\n"), HasSubstr("1 row was kept out"));
  EXPECT_THAT(absl::StrJoin(report.warnings(), "\n"), HasSubstr("1 of them with another label"));

  // The record file holds the kept rows, in order; the long repetitive text
  // is stored deflated and reads back whole.
  EXPECT_THAT(Stored(),
              ElementsAre(std::pair<std::string, std::string>{"a fine film", "10"},
                          std::pair<std::string, std::string>{"dull", "2"},
                          std::pair<std::string, std::string>{"dull", "10"},
                          std::pair<std::string, std::string>{"a fine film", "10"},
                          std::pair<std::string, std::string>{long_text, "2"},
                          std::pair<std::string, std::string>{"caf\xc3\xa9 \xe2\x82\xac", "1"}));
  auto file = RecordFile::Open(records_);
  ASSERT_TRUE(file.ok());
  EXPECT_EQ((*file)->info(4).encoding, RecordEncoding::kTextDeflate);
  EXPECT_EQ((*file)->info(1).encoding, RecordEncoding::kText);
  EXPECT_EQ((*file)->Decode(0, {}).status().code(), absl::StatusCode::kFailedPrecondition);
}

// Each text is stored deflated when that is smaller: on 5,000 WordNet
// glosses (79 bytes on average) the records hold about 0.8 of the text's
// bytes, and read back exactly.
TEST_F(TextIngestorTest, ShortEnglishTextsAreStoredDeflated) {
  const std::vector<test_util::WordNetGloss> glosses = test_util::WordNetGlosses();
  ASSERT_GT(glosses.size(), 5000u) << "wordnet-base is not installed";
  std::string csv = "label,text\n";
  for (size_t i = 0; i < 5000; ++i) {
    absl::StrAppend(&csv, glosses[i].category, ",\"",
                    absl::StrReplaceAll(glosses[i].gloss, {{"\"", "\"\""}}), "\"\n");
  }
  absl::StatusOr<v1::Dataset> d = Ingest(csv, TextTableFormat::kCsv);
  ASSERT_TRUE(d.ok()) << d.status();
  auto file = RecordFile::Open(records_);
  ASSERT_TRUE(file.ok());
  uint64_t record_bytes = 0;
  for (uint64_t i = 0; i < (*file)->size(); ++i) {
    record_bytes += (*file)->info(i).size;
    auto text = (*file)->ReadText(i);
    ASSERT_TRUE(text.ok());
    ASSERT_EQ(*text, glosses[i].gloss);
  }
  const double ratio = static_cast<double>(record_bytes) / d->report().text().text_bytes();
  EXPECT_LT(ratio, 0.85);
  EXPECT_GT(ratio, 0.6);
}

TEST_F(TextIngestorTest, GzipJsonLinesAndGivenClassNames) {
  const std::string jsonl =
      "{\"text\": \"purrs\", \"label\": \"cat\"}\n"
      "{\"text\": \"barks\", \"label\": \"dog\"}\n"
      "{\"text\": \"quacks\", \"label\": \"duck\"}\n";
  absl::StatusOr<v1::Dataset> d =
      Ingest(test_util::Gzip(jsonl), TextTableFormat::kJsonLines, {"dog", "cat", "bird"});
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->classes_size(), 3);
  EXPECT_EQ(d->classes(0).class_name(), "dog");
  EXPECT_EQ(d->classes(2).count(), 0);
  ASSERT_EQ(d->report().failed_files_size(), 1);
  EXPECT_EQ(d->report().failed_files(0).path(), "reviews.csv line 3");
  EXPECT_EQ(d->report().duplicate_count(), 0);
  EXPECT_THAT(d->report().failed_files(0).reason(),
              HasSubstr("label 'duck' is not one of header.class_names"));

  // A gzip stream cut short is refused, and leaves no record file.
  std::filesystem::remove(records_);
  const std::string gz = test_util::Gzip(jsonl);
  d = Ingest(gz.substr(0, gz.size() - 6), TextTableFormat::kJsonLines);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("truncated"));
  EXPECT_FALSE(std::filesystem::exists(records_));
}

// A label of a megabyte on each of 100 rows costs the report 64 bytes a row.
TEST_F(TextIngestorTest, HugeLabelsAreQuotedShortInTheReport) {
  std::string csv = "text,label\nfine,a\nalso,b\n";
  for (int i = 0; i < 100; ++i) absl::StrAppend(&csv, "t", i, ",", std::string(1 << 20, 'L'), "\n");
  IngestOptions options;
  options.max_text_row_bytes = 2 << 20;
  absl::StatusOr<v1::Dataset> d = Ingest(csv, TextTableFormat::kCsv, {"a", "b"}, options);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->report().failed_files_size(), 100);
  EXPECT_THAT(d->report().failed_files(0).reason(), HasSubstr("...' (1048576 bytes)"));
  EXPECT_LT(d->ByteSizeLong(), 64u << 10);
}

TEST_F(TextIngestorTest, TablesThatMakeNoDatasetAreRefusedAndLeaveNothing) {
  absl::StatusOr<v1::Dataset> d = Ingest("text,label\n\xff,a\n,b\n", TextTableFormat::kCsv);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      std::string(d.status().message()),
      HasSubstr(
          "no usable rows (2 read, 1 kept out; the first, line 2: column 'text', "
          "byte 1: 0xff is not UTF-8; save the file as UTF-8; 1 with an empty text, the first on "
          "line 3)"));

  d = Ingest("text,label\nx,a\ny,a\n", TextTableFormat::kCsv);
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("only one label ('a')"));

  IngestOptions few;
  few.max_examples = 2;
  d = Ingest("text,label\nx,a\ny,b\nz,a\n", TextTableFormat::kCsv, {}, few);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("line 4: more than 2 rows"));

  IngestOptions tight;
  tight.budget.max_bytes = 10;
  d = Ingest("text,label\nx,a\ny,b\n", TextTableFormat::kCsv, {}, tight);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kResourceExhausted);

  d = Ingest("text,label\n\"open,a\n", TextTableFormat::kCsv);
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("line 2: a quoted field opens here"));
  EXPECT_FALSE(std::filesystem::exists(records_));
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir_.path()),
                          std::filesystem::directory_iterator()),
            1);  // the upload alone
}

}  // namespace
}  // namespace kaizen::datasets
