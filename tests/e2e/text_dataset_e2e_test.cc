// Text dataset uploads through the real server on a loopback port: WordNet
// glosses as CSV, TSV (gzip) and JSON Lines; rows kept out with their line
// numbers; files refused with the line that broke them; text datasets kept
// out of the image-only training paths.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "client/lib/kaizen_client.h"
#include "gmock/gmock.h"
#include "server/api/server.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/server/loopback_server.h"
#include "tests/test_util/temp_dir.h"
#include "tests/test_util/wordnet.h"
#include "tests/test_util/zip_builder.h"

namespace kaizen {
namespace {

using ::testing::HasSubstr;

std::string CsvField(const std::string& s) {
  return absl::StrCat("\"", absl::StrReplaceAll(s, {{"\"", "\"\""}}), "\"");
}

std::string JsonString(const std::string& s) {
  return absl::StrCat("\"", absl::StrReplaceAll(s, {{"\\", "\\\\"}, {"\"", "\\\""}}), "\"");
}

class TextDatasetE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    api::KaizenServer::Options o = test_util::LoopbackOptions(data_.path());
    o.threads = 1;
    o.max_text_row_bytes = 4096;
    auto s = test_util::StartLoopbackServer(o);
    ASSERT_TRUE(s.ok()) << s.status();
    s_ = *std::move(s);
    // 300 glosses of each of three categories.
    std::map<std::string, int> taken;
    for (test_util::WordNetGloss& g : test_util::WordNetGlosses()) {
      if (g.category != "noun.animal" && g.category != "noun.food" && g.category != "noun.plant") {
        continue;
      }
      if (taken[g.category]++ >= 300) continue;
      glosses_.push_back(std::move(g));
    }
    ASSERT_EQ(glosses_.size(), 900u) << "wordnet-base is not installed";
  }

  absl::StatusOr<v1::Dataset> Upload(const std::string& name, v1::DatasetFormat format,
                                     const std::string& bytes, const std::string& file_name,
                                     const std::string& text_field = "",
                                     const std::string& label_field = "") {
    const std::string path = files_.File(file_name);
    test_util::WriteBinaryFile(path, bytes);
    v1::UploadDatasetHeader h;
    h.set_name(name);
    h.set_format(format);
    h.set_text_field(text_field);
    h.set_label_field(label_field);
    return s_.client->UploadDataset(h, {path});
  }

  test_util::TempDir data_;
  test_util::TempDir files_;
  test_util::LoopbackServer s_;
  std::vector<test_util::WordNetGloss> glosses_;
};

TEST_F(TextDatasetE2E, WordNetGlossesUploadAsCsvTsvAndJsonLines) {
  // CSV with the columns in another order than usual and named otherwise;
  // one row not UTF-8 (line 5) and one too long (line 8), kept out.
  std::string csv = "id,category,gloss\n";
  std::string tsv = "text\tlabel\n";
  std::string jsonl;
  for (size_t i = 0; i < glosses_.size(); ++i) {
    const auto& g = glosses_[i];
    std::string gloss = g.gloss;
    if (i == 3) gloss += " \xff";
    if (i == 6) gloss = std::string(5000, 'x');
    absl::StrAppend(&csv, i, ",", g.category, ",", CsvField(gloss), "\n");
    absl::StrAppend(&tsv, absl::StrReplaceAll(g.gloss, {{"\t", " "}, {"\"", "'"}}), "\t",
                    g.category, "\n");
    absl::StrAppend(&jsonl, "{\"text\": ", JsonString(g.gloss), ", \"label\": \"", g.category,
                    "\"}\n");
  }
  absl::StatusOr<v1::Dataset> d =
      Upload("glosses-csv", v1::DATASET_FORMAT_TEXT_CSV, csv, "glosses.csv", "gloss", "category");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->num_examples(), 898);
  ASSERT_EQ(d->classes_size(), 3);
  EXPECT_EQ(d->classes(0).class_name(), "noun.animal");
  EXPECT_EQ(d->classes(0).count(), 298);
  EXPECT_EQ(d->classes(1).count(), 300);
  EXPECT_EQ(d->report().text().rows_read(), 900);
  EXPECT_EQ(d->report().text().rejected_rows(), 2);
  EXPECT_EQ(d->report().text().text_field(), "gloss");
  ASSERT_EQ(d->report().failed_files_size(), 2);
  EXPECT_EQ(d->report().failed_files(0).path(), "glosses.csv line 5");
  EXPECT_THAT(d->report().failed_files(0).reason(), HasSubstr("0xff is not UTF-8"));
  EXPECT_EQ(d->report().failed_files(1).path(), "glosses.csv line 8");
  EXPECT_THAT(d->report().failed_files(1).reason(), HasSubstr("--max_text_row_bytes"));
  EXPECT_GT(d->report().text().length_p50(), 10);
  EXPECT_GT(d->stored_bytes(), d->report().text().text_bytes() / 2);

  d = Upload("glosses-tsv", v1::DATASET_FORMAT_TEXT_TSV, test_util::Gzip(tsv), "glosses.tsv.gz");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->num_examples(), 900);
  EXPECT_EQ(d->format(), v1::DATASET_FORMAT_TEXT_TSV);

  d = Upload("glosses-jsonl", v1::DATASET_FORMAT_TEXT_JSONL, jsonl, "glosses.jsonl");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->num_examples(), 900);
  EXPECT_EQ(d->report().text().rejected_rows(), 0);

  // Stored, listed and read back after the upload.
  auto got = s_.client->GetDataset("glosses-jsonl");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->report().text().length_max(), d->report().text().length_max());
}

TEST_F(TextDatasetE2E, BrokenTablesAreRefusedWithTheLineAndLeaveNothing) {
  struct Case {
    std::string what;
    v1::DatasetFormat format;
    std::string bytes;
    std::string text_field;
    absl::StatusCode code;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {"no text column", v1::DATASET_FORMAT_TEXT_CSV, "review,label\ngood,a\nbad,b\n", "",
       absl::StatusCode::kInvalidArgument,
       "t.csv line 1 (the header row): no column named 'text' (the header names 'review', "
       "'label')"},
      {"quote never closed", v1::DATASET_FORMAT_TEXT_CSV, "text,label\na,x\n\"b,y\nc,x\n", "",
       absl::StatusCode::kInvalidArgument, "t.csv line 3: a quoted field opens here"},
      {"one class", v1::DATASET_FORMAT_TEXT_JSONL,
       "{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": \"b\", \"label\": \"x\"}\n", "",
       absl::StatusCode::kInvalidArgument, "only one label ('x')"},
      {"nothing usable", v1::DATASET_FORMAT_TEXT_JSONL, "[1]\n{\"text\": 3}\n", "",
       absl::StatusCode::kInvalidArgument, "no usable rows (2 read, 2 kept out; the first, line 1"},
      {"same column twice", v1::DATASET_FORMAT_TEXT_CSV, "text,label\na,b\n", "label",
       absl::StatusCode::kInvalidArgument, "both 'label'"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<v1::Dataset> d = Upload("broken", c.format, c.bytes, "t.csv", c.text_field);
    EXPECT_EQ(d.status().code(), c.code) << c.what << ": " << d.status();
    EXPECT_THAT(std::string(d.status().message()), HasSubstr(c.needle)) << c.what;
  }
  // Text options on an image upload are refused.
  v1::UploadDatasetHeader h;
  h.set_name("imgs");
  h.set_format(v1::DATASET_FORMAT_IMAGE_FOLDER);
  h.set_text_field("text");
  const std::string path = files_.File("x.tar");
  test_util::WriteBinaryFile(path, "x");
  absl::StatusOr<v1::Dataset> d = s_.client->UploadDataset(h, {path});
  EXPECT_THAT(std::string(d.status().message()), HasSubstr("applies to the text formats only"));

  EXPECT_TRUE(std::filesystem::is_empty(data_.path() + "/datasets"));
  EXPECT_TRUE(std::filesystem::is_empty(data_.path() + "/tmp"));
  auto list = s_.client->ListAllDatasets();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->datasets_size(), 0);
}

TEST_F(TextDatasetE2E, ImageOnlyPathsRefuseATextDatasetByName) {
  std::string csv = "text,label\n";
  for (const auto& g : glosses_) absl::StrAppend(&csv, CsvField(g.gloss), ",", g.category, "\n");
  ASSERT_TRUE(Upload("glosses", v1::DATASET_FORMAT_TEXT_CSV, csv, "g.csv").ok());

  v1::StartFineTuneRequest req;
  req.set_base_model("cnn-small");
  req.set_dataset("glosses");
  req.set_output_model("out");
  req.set_strategy(v1::STRATEGY_SCRATCH);
  absl::StatusOr<v1::Job> job = s_.client->StartFineTune(req);
  EXPECT_EQ(job.status().code(), absl::StatusCode::kInvalidArgument) << job.status();
  EXPECT_THAT(std::string(job.status().message()),
              HasSubstr("base_model cnn-small is an image architecture and dataset \"glosses\" "
                        "holds text"));

  absl::StatusOr<v1::Evaluation> e = s_.client->EvaluateModel("cnn-small", 0, "glosses");
  EXPECT_EQ(e.status().code(), absl::StatusCode::kFailedPrecondition) << e.status();
}

}  // namespace
}  // namespace kaizen
