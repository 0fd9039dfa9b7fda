#include "server/datasets/text_ingestor.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/numeric/int128.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/common/sha256.h"
#include "server/common/status_macros.h"
#include "server/common/text_limits.h"
#include "server/datasets/gzip_reader.h"
#include "server/datasets/ingest_report.h"
#include "server/datasets/record_file.h"

namespace kaizen::datasets {
namespace {

constexpr size_t kReadChunk = size_t{1} << 20;

int64_t FileSize(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_size) : 0;
}

// Unicode code points in valid UTF-8: the bytes that start one.
int64_t CodePoints(absl::string_view utf8) {
  return std::count_if(utf8.begin(), utf8.end(),
                       [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; });
}

// The labels in the order the classes get: by value when every label is a
// decimal integer ("2" before "10"), else by bytes.
std::vector<std::string> SortedLabels(std::vector<std::string> labels) {
  std::vector<std::pair<int64_t, std::string>> numbered;
  for (const std::string& label : labels) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(label, &v)) {
      std::sort(labels.begin(), labels.end());
      return labels;
    }
    numbered.emplace_back(v, label);
  }
  std::sort(numbered.begin(), numbered.end());
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = std::move(numbered[i].second);
  return labels;
}

// The value at `q` (0..1) of sorted `v`, nearest rank.
int64_t Percentile(const std::vector<int64_t>& v, double q) {
  const auto rank = static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(rank, v.size() - 1)];
}

// What one ingestion accumulates while the table streams past.
class TextIngestion {
 public:
  TextIngestion(const std::string& display_name, const std::vector<std::string>& class_names,
                const IngestOptions& options, RecordFileWriter* writer)
      : display_name_(display_name), options_(options), writer_(writer) {
    for (size_t i = 0; i < class_names.size(); ++i) {
      given_.emplace(class_names[i], static_cast<int32_t>(i));
      names_.push_back(class_names[i]);
    }
    fixed_classes_ = !class_names.empty();
  }

  absl::Status Row(TextTableRow row) {
    if (absl::StripAsciiWhitespace(row.text).empty()) {
      ++empty_rows_;
      if (first_empty_line_ == 0) first_empty_line_ = row.line;
      return absl::OkStatus();
    }
    int32_t label = 0;
    if (fixed_classes_) {
      const auto it = given_.find(row.label);
      if (it == given_.end()) {
        return Rejection({row.line, absl::StrCat("label ", QuoteForMessage(row.label),
                                                 " is not one of header.class_names")});
      }
      label = it->second;
    } else {
      const auto it = given_.find(row.label);
      if (it != given_.end()) {
        label = it->second;
      } else {
        if (absl::Status st = common::ValidateClassName(
                absl::StrCat("label ", QuoteForMessage(row.label)), row.label);
            !st.ok()) {
          return Rejection({row.line, std::string(st.message())});
        }
        if (names_.size() >= static_cast<size_t>(common::kMaxClasses)) {
          return absl::InvalidArgumentError(
              absl::StrCat(display_name_, " line ", row.line, ": label ",
                           QuoteForMessage(row.label), " would be class ", names_.size() + 1,
                           "; at most ", common::kMaxClasses, " classes are accepted"));
        }
        label = static_cast<int32_t>(names_.size());
        given_.emplace(row.label, label);
        names_.push_back(row.label);
      }
    }
    if (static_cast<int64_t>(picks_.size()) >= options_.max_examples) {
      return absl::ResourceExhaustedError(
          absl::StrCat(display_name_, " line ", row.line, ": more than ", options_.max_examples,
                       " rows; the limit is ", options_.max_examples, " (--max_dataset_examples)"));
    }
    // Duplicates are found by a 128-bit prefix of the text's SHA-256.
    common::Sha256 hasher;
    hasher.Update(row.text.data(), row.text.size());
    const std::string prefix = absl::HexStringToBytes(hasher.HexDigest().substr(0, 32));
    uint64_t high = 0;
    uint64_t low = 0;
    std::memcpy(&high, prefix.data(), 8);
    std::memcpy(&low, prefix.data() + 8, 8);
    const absl::uint128 key = absl::MakeUint128(high, low);
    const auto [first, inserted] = first_seen_.emplace(key, std::make_pair(row.line, label));
    if (!inserted) {
      ++duplicates_;
      if (first->second.second != label) ++conflicting_;
      if (report_.duplicates_size() < options_.max_listed) {
        v1::DatasetReport::Duplicate* d = report_.add_duplicates();
        d->set_path(absl::StrCat(display_name_, " line ", row.line));
        d->set_duplicate_of(absl::StrCat(display_name_, " line ", first->second.first));
      }
    }
    ASSIGN_OR_RETURN(const uint64_t record, writer_->AppendText(label, row.text));
    picks_.push_back({record, label});
    lengths_.push_back(CodePoints(row.text));
    text_bytes_ += static_cast<int64_t>(row.text.size());
    return absl::OkStatus();
  }

  absl::Status Rejection(TextTableRejection r) {
    ++rejected_;
    if (first_rejection_.reason.empty()) first_rejection_ = r;
    if (report_.failed_files_size() < options_.max_listed) {
      v1::DatasetReport::FailedFile* f = report_.add_failed_files();
      f->set_path(absl::StrCat(display_name_, " line ", r.line));
      f->set_reason(std::move(r.reason));
    }
    return absl::OkStatus();
  }

  // Checks that the rows make a dataset, and fills `summary`; returns the
  // classes in label order and relabels the picks to it.
  absl::StatusOr<std::vector<std::string>> Finish(const TextTableReader& reader,
                                                  kaizen::v1::Dataset* summary) {
    if (picks_.empty()) {
      std::string why = absl::StrCat(display_name_, ": no usable rows (", reader.rows(), " read");
      if (rejected_ > 0) {
        absl::StrAppend(&why, ", ", rejected_, " kept out; the first, line ", first_rejection_.line,
                        ": ", first_rejection_.reason);
      }
      if (empty_rows_ > 0) {
        absl::StrAppend(&why, "; ", empty_rows_, " with an empty text, the first on line ",
                        first_empty_line_);
      }
      absl::StrAppend(&why, ")");
      return absl::InvalidArgumentError(why);
    }
    std::vector<int64_t> found(names_.size(), 0);
    for (const RecordPick& p : picks_) ++found[static_cast<size_t>(p.label)];
    const auto distinct =
        std::count_if(found.begin(), found.end(), [](int64_t n) { return n > 0; });
    if (distinct < 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          display_name_, ": only one label ('", names_[static_cast<size_t>(picks_.front().label)],
          "') occurs in ", picks_.size(), " usable rows; at least two classes are needed"));
    }
    std::vector<std::string> classes = names_;
    if (!fixed_classes_) {
      classes = SortedLabels(names_);
      absl::flat_hash_map<std::string, int32_t> final_label;
      for (size_t i = 0; i < classes.size(); ++i) {
        final_label.emplace(classes[i], static_cast<int32_t>(i));
      }
      for (RecordPick& p : picks_) p.label = final_label.at(names_[static_cast<size_t>(p.label)]);
    }
    std::vector<int64_t> counts(classes.size(), 0);
    for (const RecordPick& p : picks_) ++counts[static_cast<size_t>(p.label)];

    summary->set_num_examples(static_cast<int64_t>(picks_.size()));
    *summary->mutable_report() = std::move(report_);
    v1::DatasetReport* report = summary->mutable_report();
    SummarizeClasses(classes, counts, summary);
    report->set_duplicate_count(duplicates_);
    v1::TextReport* text = report->mutable_text();
    text->set_rows_read(reader.rows());
    text->set_rejected_rows(rejected_);
    text->set_empty_rows(empty_rows_);
    text->set_blank_lines(reader.blank_lines());
    text->set_conflicting_duplicates(conflicting_);
    text->set_text_bytes(text_bytes_);
    std::sort(lengths_.begin(), lengths_.end());
    text->set_length_min(lengths_.front());
    text->set_length_p50(Percentile(lengths_, 0.5));
    text->set_length_p90(Percentile(lengths_, 0.9));
    text->set_length_p99(Percentile(lengths_, 0.99));
    text->set_length_max(lengths_.back());
    if (rejected_ > 0) {
      report->add_warnings(
          absl::StrCat(rejected_, rejected_ == 1 ? " row was" : " rows were",
                       " kept out (see the report's failed_files, which lists them with their line "
                       "numbers); the first, line ",
                       first_rejection_.line, ": ", first_rejection_.reason));
    }
    if (empty_rows_ > 0) {
      report->add_warnings(absl::StrCat(empty_rows_, empty_rows_ == 1 ? " row has" : " rows have",
                                        " an empty text (kept out); the first is on line ",
                                        first_empty_line_));
    }
    if (duplicates_ > 0) {
      report->add_warnings(absl::StrCat(
          duplicates_, duplicates_ == 1 ? " row repeats" : " rows repeat",
          " the text of an earlier row (kept; see the report's duplicates)",
          conflicting_ > 0 ? absl::StrCat("; ", conflicting_, " of them with another label") : ""));
    }
    return classes;
  }

  const std::vector<RecordPick>& picks() const { return picks_; }

 private:
  const std::string& display_name_;
  const IngestOptions& options_;
  RecordFileWriter* writer_;
  bool fixed_classes_ = false;
  absl::flat_hash_map<std::string, int32_t> given_;  // label -> provisional label
  std::vector<std::string> names_;                   // by provisional label
  // By a 128-bit prefix of the text's SHA-256: the first line and label.
  absl::flat_hash_map<absl::uint128, std::pair<int64_t, int32_t>> first_seen_;
  std::vector<RecordPick> picks_;
  std::vector<int64_t> lengths_;
  v1::DatasetReport report_;
  int64_t rejected_ = 0;
  TextTableRejection first_rejection_;
  int64_t empty_rows_ = 0;
  int64_t first_empty_line_ = 0;
  int64_t duplicates_ = 0;
  int64_t conflicting_ = 0;
  int64_t text_bytes_ = 0;
};

}  // namespace

absl::StatusOr<kaizen::v1::Dataset> IngestTextTable(const std::string& path,
                                                    const std::string& display_name,
                                                    const TextTableOptions& table,
                                                    const std::vector<std::string>& class_names,
                                                    const IngestOptions& options,
                                                    const std::string& record_path) {
  ASSIGN_OR_RETURN(std::unique_ptr<RecordFileWriter> writer, RecordFileWriter::Create(record_path));
  TextIngestion ingestion(display_name, class_names, options, writer.get());
  TextTableOptions table_options = table;
  table_options.max_row_bytes = options.max_text_row_bytes;
  TextTableReader reader(
      table_options, display_name, [&](TextTableRow row) { return ingestion.Row(std::move(row)); },
      [&](TextTableRejection r) { return ingestion.Rejection(std::move(r)); });

  ASSIGN_OR_RETURN(std::unique_ptr<GzipReader> file, GzipReader::Open(path, display_name));
  DecodeBudget budget(options.budget, FileSize(path));
  std::string chunk(kReadChunk, '\0');
  while (true) {
    ASSIGN_OR_RETURN(const size_t n, file->Read(chunk.data(), chunk.size()));
    RETURN_IF_ERROR(budget.Charge(static_cast<int64_t>(n), display_name));
    RETURN_IF_ERROR(reader.Feed(absl::string_view(chunk.data(), n)));
    if (n < chunk.size()) break;
  }
  if (!file->Ended()) {
    return absl::InvalidArgumentError(
        absl::StrCat(display_name,
                     ": truncated: the gzip data ends before its trailer (the CRC-32 and "
                     "length that close it)"));
  }
  RETURN_IF_ERROR(reader.Finish());

  kaizen::v1::Dataset summary;
  ASSIGN_OR_RETURN(const std::vector<std::string> classes, ingestion.Finish(reader, &summary));
  ASSIGN_OR_RETURN(const int64_t stored, writer->Finish(classes, ingestion.picks()));
  summary.set_stored_bytes(stored);
  return summary;
}

}  // namespace kaizen::datasets
