#include "server/datasets/text_table.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "server/common/status_macros.h"
#include "server/common/utf8.h"

namespace kaizen::datasets {
namespace {

constexpr char kBom[] = "\xEF\xBB\xBF";
// Integers a JSON number label may be: exactly representable as a double.
constexpr double kMaxIntegerLabel = 9007199254740992.0;  // 2^53

// Why `value` (the field `what` as it is in the file, starting on
// `field_line`) cannot be used, or "" when it is valid UTF-8 without NUL.
// Names the line of the bad byte when it is not the row's, `row_line`.
std::string FieldProblem(absl::string_view what, absl::string_view value, int64_t field_line,
                         int64_t row_line) {
  const int64_t bad = common::FirstInvalidUtf8Byte(value);
  const size_t nul = value.find('\0');
  if (bad < 0 && nul == absl::string_view::npos) return "";
  const size_t at = bad >= 0 ? static_cast<size_t>(bad) : nul;
  const int64_t bad_line =
      field_line + std::count(value.begin(), value.begin() + static_cast<std::ptrdiff_t>(at), '\n');
  std::string where = absl::StrCat(what, ", byte ", at + 1);
  if (bad_line != row_line) absl::StrAppend(&where, " (on line ", bad_line, ")");
  if (bad < 0) return absl::StrCat(where, ": a NUL character; text may not contain NUL");
  return absl::StrFormat("%s: 0x%02x is not UTF-8; save the file as UTF-8", where,
                         static_cast<unsigned char>(value[at]));
}

// Why a JSON line may not go to the parser, or "": its nesting and its
// number of values (each costs the parser's Struct far more than its bytes)
// over the limits, brackets that close what was not opened, or a quote the
// parser would accept but JSON does not (protobuf's parser takes 'strings').
// Strings are skipped.
std::string JsonShapeProblem(absl::string_view json, int max_depth, int64_t max_values) {
  int depth = 0;
  int deepest = 0;
  int64_t values = 1;
  bool in_string = false;
  bool escaped = false;
  for (const char c : json) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (c == ']' || c == '}') {
      if (--depth < 0) return "not JSON: a bracket closes what was not opened";
    } else if (c == ',' || c == ':') {
      ++values;
    } else if (c == '\'') {
      return "not JSON: strings and names must be in double quotes";
    }
  }
  if (deepest > max_depth) {
    return absl::StrCat("JSON nested ", deepest, " deep; at most ", max_depth,
                        " levels are accepted");
  }
  if (values > max_values) {
    return absl::StrCat("JSON of more than ", max_values, " values; at most ", max_values,
                        " are accepted on one line");
  }
  return "";
}

const char* KindName(const google::protobuf::Value& v) {
  switch (v.kind_case()) {
    case google::protobuf::Value::kNullValue:
      return "null";
    case google::protobuf::Value::kNumberValue:
      return "a number";
    case google::protobuf::Value::kStringValue:
      return "a string";
    case google::protobuf::Value::kBoolValue:
      return "a boolean";
    case google::protobuf::Value::kStructValue:
      return "an object";
    case google::protobuf::Value::kListValue:
      return "an array";
    default:
      return "empty";
  }
}

// The length of `s`'s longest prefix of at most `max_bytes` that does not
// end inside a character.
size_t CutAtCharacter(absl::string_view s, size_t max_bytes) {
  if (s.size() <= max_bytes) return s.size();
  size_t cut = max_bytes;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  return cut;
}

}  // namespace

std::string QuoteForMessage(absl::string_view value, size_t max_bytes) {
  if (value.size() <= max_bytes) return absl::StrCat("'", common::SanitizeUtf8(value), "'");
  return absl::StrCat("'", common::SanitizeUtf8(value.substr(0, CutAtCharacter(value, max_bytes))),
                      "...' (", value.size(), " bytes)");
}

TextTableReader::TextTableReader(TextTableOptions options, std::string display_name, RowSink on_row,
                                 RejectionSink on_rejection)
    : options_(std::move(options)),
      display_name_(std::move(display_name)),
      on_row_(std::move(on_row)),
      on_rejection_(std::move(on_rejection)),
      separator_(options_.format == TextTableFormat::kTsv ? '\t' : ',') {}

absl::Status TextTableReader::Feed(absl::string_view bytes) {
  if (failed_) return absl::FailedPreconditionError("the text table reader already failed");
  for (const char c : bytes) {
    if (at_start_) {
      if (c == kBom[bom_matched_]) {
        if (++bom_matched_ == 3) at_start_ = false;
        continue;
      }
      RETURN_IF_ERROR(FlushPartialBom());
    }
    absl::Status st = options_.format == TextTableFormat::kJsonLines ? FeedJsonLine(c) : FeedCsv(c);
    if (!st.ok()) {
      failed_ = true;
      return st;
    }
  }
  return absl::OkStatus();
}

absl::Status TextTableReader::FlushPartialBom() {
  at_start_ = false;
  for (int i = 0; i < bom_matched_; ++i) {
    absl::Status st =
        options_.format == TextTableFormat::kJsonLines ? FeedJsonLine(kBom[i]) : FeedCsv(kBom[i]);
    if (!st.ok()) {
      failed_ = true;
      return st;
    }
  }
  bom_matched_ = 0;
  return absl::OkStatus();
}

void TextTableReader::CountRowByte() {
  if (++row_bytes_ > options_.max_row_bytes && !oversize_) {
    oversize_ = true;
    field_.clear();
    field_.shrink_to_fit();
    fields_.clear();
    fields_.shrink_to_fit();
    field_lines_.clear();
  }
}

void TextTableReader::StartRow() {
  row_started_ = true;
  row_line_ = line_;
  row_bytes_ = 0;
  oversize_ = false;
  problem_.clear();
  fields_.clear();
  field_lines_.clear();
  field_.clear();
  field_line_ = line_;
}

void TextTableReader::Append(char c) {
  if (!oversize_) field_.push_back(c);
}

bool TextTableReader::EndsField(char c, bool at_separator) {
  return at_separator || c == '\n' || c == '\r';
}

// Outside quotes: a separator ends the field, a line feed the row too, and a
// carriage return waits for the next byte (CRLF, or part of the text).
absl::Status TextTableReader::EndFieldAt(char c) {
  if (c == '\r') {
    pending_cr_ = true;
    return absl::OkStatus();
  }
  RETURN_IF_ERROR(EndCsvField());
  return c == '\n' ? EndCsvRecord() : absl::OkStatus();
}

absl::Status TextTableReader::FeedCsv(char c) {
  if (pending_cr_) {
    pending_cr_ = false;
    if (c != '\n') {
      // A carriage return not before a line feed is part of the text (it
      // was counted as it came, unless it began the row).
      if (!row_started_) {
        StartRow();
        CountRowByte();
      }
      if (state_ == CsvState::kQuoteInQuoted && problem_.empty()) {
        problem_ = absl::StrCat("field ", num_fields_ + 1, ": text after its closing quote");
      }
      state_ = CsvState::kUnquoted;
      Append('\r');
    }
  }
  if (!row_started_) {
    if (c == '\n') {
      ++blank_lines_;
      ++line_;
      return absl::OkStatus();
    }
    if (c == '\r') {
      pending_cr_ = true;
      return absl::OkStatus();
    }
    StartRow();
  }
  if (c != '\n' || state_ == CsvState::kQuoted) CountRowByte();
  const bool at_separator = c == separator_;
  switch (state_) {
    case CsvState::kFieldStart:
      if (c == '"') {
        state_ = CsvState::kQuoted;
        quote_line_ = line_;
      } else if (EndsField(c, at_separator)) {
        RETURN_IF_ERROR(EndFieldAt(c));
      } else {
        Append(c);
        state_ = CsvState::kUnquoted;
      }
      break;
    case CsvState::kUnquoted:
      if (EndsField(c, at_separator)) {
        RETURN_IF_ERROR(EndFieldAt(c));
      } else {
        Append(c);
      }
      break;
    case CsvState::kQuoted:
      if (c == '"') {
        state_ = CsvState::kQuoteInQuoted;
      } else {
        Append(c);
      }
      break;
    case CsvState::kQuoteInQuoted:
      if (c == '"') {
        Append('"');
        state_ = CsvState::kQuoted;
      } else if (EndsField(c, at_separator)) {
        RETURN_IF_ERROR(EndFieldAt(c));
      } else {
        if (problem_.empty()) {
          problem_ = absl::StrCat("field ", num_fields_ + 1,
                                  ": text after its closing quote; quote the whole field and "
                                  "double each quote inside it");
        }
        Append(c);
        state_ = CsvState::kUnquoted;
      }
      break;
  }
  if (c == '\n') ++line_;
  return absl::OkStatus();
}

absl::Status TextTableReader::EndCsvField() {
  state_ = CsvState::kFieldStart;
  ++num_fields_;
  // Fields past the columns any row needs are counted, not kept.
  const size_t keep = std::max<size_t>(static_cast<size_t>(options_.max_columns), num_columns_);
  if (!oversize_ && fields_.size() < keep) {
    fields_.push_back(std::move(field_));
    field_lines_.push_back(field_line_);
  }
  field_.clear();
  field_line_ = line_;
  return absl::OkStatus();
}

absl::Status TextTableReader::EndCsvRecord() {
  const int64_t num_fields = num_fields_;
  num_fields_ = 0;
  row_started_ = false;
  state_ = CsvState::kFieldStart;
  if (!have_header_) return TakeHeader(num_fields);
  ++rows_;
  if (oversize_) {
    return Reject(absl::StrCat("the row is longer than ", options_.max_row_bytes,
                               " bytes, the limit (--max_text_row_bytes)"));
  }
  if (!problem_.empty()) return Reject(problem_);
  if (static_cast<size_t>(num_fields) != num_columns_) {
    return Reject(absl::StrCat(num_fields, num_fields == 1 ? " field" : " fields",
                               " where the header names ", num_columns_,
                               " columns; a field holding the separator must be quoted"));
  }
  TextTableRow row;
  row.line = row_line_;
  const auto text_at = static_cast<size_t>(text_column_);
  const auto label_at = static_cast<size_t>(label_column_);
  std::string problem = FieldProblem(absl::StrCat("column '", options_.text_field, "'"),
                                     fields_[text_at], field_lines_[text_at], row_line_);
  if (problem.empty()) {
    problem = FieldProblem(absl::StrCat("column '", options_.label_field, "'"), fields_[label_at],
                           field_lines_[label_at], row_line_);
  }
  if (!problem.empty()) return Reject(std::move(problem));
  if (fields_[label_at].empty()) {
    return Reject(absl::StrCat("column '", options_.label_field, "' is empty: no label"));
  }
  row.text = std::move(fields_[text_at]);
  row.label = std::move(fields_[label_at]);
  return on_row_(std::move(row));
}

absl::Status TextTableReader::TakeHeader(int64_t num_fields) {
  const std::string where = absl::StrCat(display_name_, " line ", row_line_, " (the header row)");
  if (oversize_) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": longer than ", options_.max_row_bytes,
                                                   " bytes, the limit (--max_text_row_bytes)"));
  }
  if (num_fields > options_.max_columns) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", num_fields, " columns; at most ",
                                                   options_.max_columns, " are accepted"));
  }
  if (!problem_.empty()) return absl::InvalidArgumentError(absl::StrCat(where, ": ", problem_));
  for (size_t i = 0; i < fields_.size(); ++i) {
    std::string problem =
        FieldProblem(absl::StrCat("column ", i + 1), fields_[i], field_lines_[i], row_line_);
    if (!problem.empty()) return absl::InvalidArgumentError(absl::StrCat(where, ": ", problem));
    if (fields_[i].find('\r') != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          where,
          ": a carriage return without a line feed after it; lines that end in CR alone "
          "(old Mac files) are not read: convert them to LF or CRLF"));
    }
  }
  const auto find = [&](const std::string& name, const char* flag, int* column) {
    for (size_t i = 0; i < fields_.size(); ++i) {
      if (fields_[i] != name) continue;
      if (*column >= 0) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": column '", name,
                                                       "' is named twice (columns ", *column + 1,
                                                       " and ", i + 1, ")"));
      }
      *column = static_cast<int>(i);
    }
    if (*column < 0) {
      std::vector<std::string> shown;
      for (size_t i = 0; i < fields_.size() && i < 20; ++i) {
        shown.push_back(QuoteForMessage(fields_[i]));
      }
      if (fields_.size() > 20) shown.push_back("...");
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": no column named '", name, "' (the header names ",
                       absl::StrJoin(shown, ", "), "); name the column with ", flag,
                       separator_ == ',' ? "" : " (fields are tab-separated)"));
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(find(options_.text_field, "header.text_field", &text_column_));
  RETURN_IF_ERROR(find(options_.label_field, "header.label_field", &label_column_));
  have_header_ = true;
  num_columns_ = static_cast<size_t>(num_fields);
  return absl::OkStatus();
}

absl::Status TextTableReader::FeedJsonLine(char c) {
  if (c == '\n') {
    absl::Status st = EndJsonLine();
    ++line_;
    return st;
  }
  if (!row_started_) StartRow();
  CountRowByte();
  Append(c);
  return absl::OkStatus();
}

absl::Status TextTableReader::EndJsonLine() {
  if (!row_started_) {
    ++blank_lines_;
    return absl::OkStatus();
  }
  row_started_ = false;
  if (!oversize_ && absl::StripAsciiWhitespace(field_).empty()) {
    ++blank_lines_;
    return absl::OkStatus();
  }
  ++rows_;
  if (oversize_) {
    return Reject(absl::StrCat("the line is longer than ", options_.max_row_bytes,
                               " bytes, the limit (--max_text_row_bytes)"));
  }
  if (std::string problem = FieldProblem("the line", field_, row_line_, row_line_);
      !problem.empty()) {
    return Reject(std::move(problem));
  }
  if (std::string problem =
          JsonShapeProblem(field_, options_.max_json_depth, options_.max_json_values);
      !problem.empty()) {
    return Reject(std::move(problem));
  }
  google::protobuf::Struct object;
  google::protobuf::util::JsonParseOptions parse;
  parse.ignore_unknown_fields = false;
  if (auto st = google::protobuf::util::JsonStringToMessage(
          google::protobuf::StringPiece(field_.data(), field_.size()), &object, parse);
      !st.ok()) {
    // The parser's message goes on with the line and a caret under the error.
    const std::string message = st.message().ToString();
    return Reject(absl::StrCat("not a JSON object: ",
                               message.substr(0, std::min<size_t>(message.find('\n'), 200))));
  }
  const auto& fields = object.fields();
  const auto text = fields.find(options_.text_field);
  if (text == fields.end()) {
    return Reject(absl::StrCat("no field '", options_.text_field, "' (set header.text_field)"));
  }
  if (text->second.kind_case() != google::protobuf::Value::kStringValue) {
    return Reject(absl::StrCat("field '", options_.text_field, "' is ", KindName(text->second),
                               ", not a string"));
  }
  const auto label = fields.find(options_.label_field);
  if (label == fields.end()) {
    return Reject(absl::StrCat("no field '", options_.label_field, "' (set header.label_field)"));
  }
  TextTableRow row;
  row.line = row_line_;
  if (label->second.kind_case() == google::protobuf::Value::kStringValue) {
    row.label = label->second.string_value();
  } else if (label->second.kind_case() == google::protobuf::Value::kNumberValue) {
    const double v = label->second.number_value();
    if (v != std::floor(v)) {
      return Reject(absl::StrFormat("field '%s' is %.17g; a number label must be an integer",
                                    options_.label_field, v));
    }
    if (!(std::fabs(v) < kMaxIntegerLabel)) {
      return Reject(absl::StrFormat(
          "field '%s' is %.17g, beyond the integers JSON numbers hold exactly (2^53); give it "
          "as a string",
          options_.label_field, v));
    }
    row.label = absl::StrCat(static_cast<int64_t>(v));
  } else {
    return Reject(absl::StrCat("field '", options_.label_field, "' is ", KindName(label->second),
                               ", not a string or an integer"));
  }
  if (row.label.empty()) {
    return Reject(absl::StrCat("field '", options_.label_field, "' is empty: no label"));
  }
  row.text = text->second.string_value();
  // Escapes (\u0000, a lone surrogate) can make what the checked line did not
  // hold; offsets in the decoded value would not be the file's.
  for (const auto& [name, value] :
       {std::pair{&options_.text_field, &row.text}, std::pair{&options_.label_field, &row.label}}) {
    if (value->find('\0') != std::string::npos || !common::IsValidUtf8(*value)) {
      return Reject(absl::StrCat("field '", *name,
                                 "': a \\u escape makes a NUL character or a lone surrogate, "
                                 "which text may not hold"));
    }
  }
  return on_row_(std::move(row));
}

absl::Status TextTableReader::Reject(std::string reason) {
  // Reasons are stored in the dataset's report: bounded, whatever they quote.
  constexpr size_t kMaxReasonBytes = 400;
  if (reason.size() > kMaxReasonBytes) {
    reason.resize(CutAtCharacter(reason, kMaxReasonBytes));
    reason += "...";
  }
  return on_rejection_(TextTableRejection{row_line_, std::move(reason)});
}

absl::Status TextTableReader::Finish() {
  if (failed_) return absl::FailedPreconditionError("the text table reader already failed");
  // A file shorter than the byte-order mark it began.
  if (at_start_) RETURN_IF_ERROR(FlushPartialBom());
  if (options_.format == TextTableFormat::kJsonLines) {
    if (row_started_) return EndJsonLine();
    return absl::OkStatus();
  }
  pending_cr_ = false;
  if (row_started_) {
    if (state_ == CsvState::kQuoted) {
      failed_ = true;
      return absl::InvalidArgumentError(absl::StrCat(
          display_name_, " line ", quote_line_,
          ": a quoted field opens here and is never closed; the rest of the file was read "
          "as part of it"));
    }
    RETURN_IF_ERROR(EndCsvField());
    RETURN_IF_ERROR(EndCsvRecord());
  }
  if (!have_header_) {
    failed_ = true;
    return absl::InvalidArgumentError(absl::StrCat(
        display_name_, ": no header row; the first row must name the columns (",
        options_.text_field, separator_ == ',' ? "," : "<tab>", options_.label_field, ", ...)"));
  }
  return absl::OkStatus();
}

}  // namespace kaizen::datasets
