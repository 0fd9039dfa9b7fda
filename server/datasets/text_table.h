// Reads labelled text from an uploaded table, streamed: CSV and TSV (a header
// row naming the columns, fields quoted RFC 4180 style) and JSON Lines (one
// object per line). Every row comes out either as a (text, label) pair with
// the line it started on, or as a rejection with that line and the reason;
// only what makes the whole file unreadable (no header, a missing column, a
// quote never closed) is an error.
//
// Budgets: one row's bytes are capped (a longer row is rejected without
// being held in memory), and so are the columns of a CSV header and the
// nesting of a JSON line. The bytes are hostile: nothing read from them sizes
// an allocation, and every field handed out is valid UTF-8 without NUL.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace kaizen::datasets {

enum class TextTableFormat { kCsv, kTsv, kJsonLines };

struct TextTableOptions {
  TextTableFormat format = TextTableFormat::kCsv;
  // The column (CSV, TSV) or field (JSON Lines) holding the text and the
  // label.
  std::string text_field = "text";
  std::string label_field = "label";
  // Most bytes in one row (all its fields, or one JSON line); a longer row is
  // rejected. The header row must fit too.
  int64_t max_row_bytes = int64_t{1} << 20;
  // Most columns a CSV or TSV header may name.
  int max_columns = 1024;
  // Deepest nesting of arrays and objects in a JSON line, and most values in
  // one (protobuf's parser holds each in a Struct of ~60 bytes or more).
  int max_json_depth = 32;
  int64_t max_json_values = 4096;
};

// `value` for an error message or a report, whatever its size: in quotes,
// at most `max_bytes` of it (cut at a character) followed by "..." and its
// size; bytes that are not UTF-8 replaced.
std::string QuoteForMessage(absl::string_view value, size_t max_bytes = 64);

// One usable row. `line` is the 1-based line the row starts on.
struct TextTableRow {
  int64_t line = 0;
  std::string text;
  std::string label;
};

// A row kept out, and why ("field 'text': byte 0xff at offset 5 is not
// UTF-8 (line 18)"); the reason names the line when it differs from `line`.
struct TextTableRejection {
  int64_t line = 0;
  std::string reason;
};

class TextTableReader {
 public:
  using RowSink = std::function<absl::Status(TextTableRow row)>;
  using RejectionSink = std::function<absl::Status(TextTableRejection rejection)>;

  // `display_name` names the file in errors. A sink's error ends the read
  // and is returned by Feed or Finish.
  TextTableReader(TextTableOptions options, std::string display_name, RowSink on_row,
                  RejectionSink on_rejection);

  // The next bytes of the file. InvalidArgument (naming the file and the
  // line) when the file cannot be read on: a header without the named
  // columns, or a header over the row limit.
  absl::Status Feed(absl::string_view bytes);
  // The end of the file: the last row, if it has no line break after it.
  // InvalidArgument for a quoted field never closed, or a CSV file without
  // a header row.
  absl::Status Finish();

  // Rows handed out or rejected so far (the header and blank lines not
  // counted), and lines that held nothing (or, in JSON Lines, only white
  // space).
  int64_t rows() const { return rows_; }
  int64_t blank_lines() const { return blank_lines_; }

 private:
  absl::Status FeedCsv(char c);
  // Whether `c`, outside quotes, ends a field (a separator, LF or CR), and
  // what it then does.
  static bool EndsField(char c, bool at_separator);
  absl::Status EndFieldAt(char c);
  absl::Status FeedJsonLine(char c);
  absl::Status EndCsvField();
  absl::Status EndCsvRecord();
  absl::Status EndJsonLine();
  absl::Status TakeHeader(int64_t num_fields);
  // Feeds the bytes of a byte-order mark that turned out not to be one.
  absl::Status FlushPartialBom();
  // Counts one more byte of the current row; past the limit, drops what the
  // row holds.
  void CountRowByte();
  absl::Status Reject(std::string reason);
  // Adds a byte to the current field, unless the row is over its limit.
  void Append(char c);
  void StartRow();

  enum class CsvState { kFieldStart, kUnquoted, kQuoted, kQuoteInQuoted };

  TextTableOptions options_;
  std::string display_name_;
  RowSink on_row_;
  RejectionSink on_rejection_;
  char separator_ = ',';

  int64_t line_ = 1;       // the line the next byte is on
  int64_t row_line_ = 1;   // the line the current row started on
  int64_t row_bytes_ = 0;  // bytes of the current row seen
  bool row_started_ = false;
  bool oversize_ = false;
  bool pending_cr_ = false;
  bool at_start_ = true;  // before the first byte (a UTF-8 BOM is skipped)
  int bom_matched_ = 0;
  std::string problem_;  // the first thing wrong with the current row

  CsvState state_ = CsvState::kFieldStart;
  std::vector<std::string> fields_;
  std::vector<int64_t> field_lines_;  // the line each field starts on
  std::string field_;
  int64_t field_line_ = 1;  // the line the current field started on
  int64_t quote_line_ = 1;  // the line the open quoted field started on
  int64_t num_fields_ = 0;  // fields of the current row, kept or not
  bool have_header_ = false;
  int text_column_ = -1;
  int label_column_ = -1;
  size_t num_columns_ = 0;

  int64_t rows_ = 0;
  int64_t blank_lines_ = 0;
  bool failed_ = false;
};

}  // namespace kaizen::datasets
