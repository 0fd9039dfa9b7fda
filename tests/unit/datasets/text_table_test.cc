// TextTableReader: CSV, TSV and JSON Lines, fed whole and in pieces; rows
// kept out with their line numbers; errors that end the file.
#include "server/datasets/text_table.h"

#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kaizen::datasets {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

struct Read {
  std::vector<TextTableRow> rows;
  std::vector<TextTableRejection> rejected;
  absl::Status status;
  int64_t blank_lines = 0;
  int64_t rows_seen = 0;
};

// Feeds `bytes` in pieces of `piece` bytes (0: all at once).
Read ReadTable(const std::string& bytes, TextTableOptions options, size_t piece = 0) {
  Read out;
  TextTableReader reader(
      options, "t.csv",
      [&](TextTableRow row) {
        out.rows.push_back(std::move(row));
        return absl::OkStatus();
      },
      [&](TextTableRejection r) {
        out.rejected.push_back(std::move(r));
        return absl::OkStatus();
      });
  if (piece == 0) piece = bytes.size() + 1;
  for (size_t i = 0; i < bytes.size() && out.status.ok(); i += piece) {
    out.status = reader.Feed(absl::string_view(bytes).substr(i, piece));
  }
  if (out.status.ok()) out.status = reader.Finish();
  out.blank_lines = reader.blank_lines();
  out.rows_seen = reader.rows();
  return out;
}

TextTableOptions Csv() { return {}; }

}  // namespace

// Readable failures.
void PrintTo(const TextTableRow& r, std::ostream* os) {
  *os << "{line " << r.line << ", \"" << r.text << "\", \"" << r.label << "\"}";
}
void PrintTo(const TextTableRejection& r, std::ostream* os) {
  *os << "{line " << r.line << ": " << r.reason << "}";
}

namespace {

TextTableOptions Tsv() {
  TextTableOptions o;
  o.format = TextTableFormat::kTsv;
  return o;
}
TextTableOptions Jsonl() {
  TextTableOptions o;
  o.format = TextTableFormat::kJsonLines;
  return o;
}

MATCHER_P3(RowIs, line, text, label, "") {
  return arg.line == line && arg.text == text && arg.label == label;
}
MATCHER_P2(RejectedAt, line, needle, "") {
  return arg.line == line && arg.reason.find(needle) != std::string::npos;
}

TEST(TextTableTest, CsvColumnsAreFoundByNameAndRowsKeepTheirLines) {
  const Read r = ReadTable("id,label,text,extra\n1,pos,good film,x\n\n2,neg,bad film,y\n", Csv());
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_THAT(r.rows, ElementsAre(RowIs(2, "good film", "pos"), RowIs(4, "bad film", "neg")));
  EXPECT_THAT(r.rejected, IsEmpty());
  EXPECT_EQ(r.blank_lines, 1);
  EXPECT_EQ(r.rows_seen, 2);
}

TEST(TextTableTest, QuotedFieldsHoldSeparatorsQuotesAndLineBreaks) {
  const std::string csv =
      "text,label\r\n"
      "\"one, two\",a\r\n"
      "\"she said \"\"hi\"\"\",b\r\n"
      "\"line one\nline two\",a\r\n"
      "last,b";  // no line break at the end
  for (size_t piece : {0, 1, 2, 7}) {
    const Read r = ReadTable(csv, Csv(), piece);
    ASSERT_TRUE(r.status.ok()) << r.status;
    EXPECT_THAT(r.rows, ElementsAre(RowIs(2, "one, two", "a"), RowIs(3, "she said \"hi\"", "b"),
                                    RowIs(4, "line one\nline two", "a"), RowIs(6, "last", "b")))
        << "piece " << piece;
  }
}

TEST(TextTableTest, AByteOrderMarkIsSkippedAndTsvSplitsOnTabs) {
  const Read r = ReadTable("\xEF\xBB\xBFtext\tlabel\na, b\tx\n\"t\tab\"\ty\n", Tsv(), 1);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_THAT(r.rows, ElementsAre(RowIs(2, "a, b", "x"), RowIs(3, "t\tab", "y")));
}

TEST(TextTableTest, BadRowsAreKeptOutWithTheirLineAndReason) {
  TextTableOptions o;
  o.max_row_bytes = 40;
  const std::string csv =
      absl::StrCat("text,label\n",
                   "fine,a\n",                                    // 2
                   "bad \xff byte,a\n",                           // 3
                   "\"multi\nline \xc3\",b\n",                    // 4-5: the bad byte is on line 5
                   "three,fields,here\n",                         // 6
                   "\"closed\"then more,a\n",                     // 7
                   std::string(100, 'x'), ",a\n",                 // 8: over the limit
                   "no label,\n",                                 // 9
                   "nul \\0", std::string(1, '\0'), " here,b\n",  // 10
                   "after,b\n");                                  // 11
  const Read r = ReadTable(csv, o);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_THAT(r.rows, ElementsAre(RowIs(2, "fine", "a"), RowIs(11, "after", "b")));
  EXPECT_THAT(r.rejected, ElementsAre(RejectedAt(3, "column 'text', byte 5: 0xff is not UTF-8"),
                                      RejectedAt(4, "(on line 5)"),
                                      RejectedAt(6, "3 fields where the header names 2 columns"),
                                      RejectedAt(7, "text after its closing quote"),
                                      RejectedAt(8, "longer than 40 bytes"),
                                      RejectedAt(9, "no label"), RejectedAt(10, "NUL")));
  EXPECT_EQ(r.rows_seen, 9);  // lines 4 and 5 are one row
}

TEST(TextTableTest, AHeaderWithoutTheColumnsOrAnOpenQuoteEndsTheFile) {
  Read r = ReadTable("review,stars\ngood,5\n", Csv());
  EXPECT_EQ(r.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status.message()),
              HasSubstr("t.csv line 1 (the header row): no column named 'text' (the header "
                        "names 'review', 'stars'); name the column with header.text_field"));

  TextTableOptions named;
  named.text_field = "review";
  named.label_field = "stars";
  r = ReadTable("review,stars\ngood,5\n", named);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_THAT(r.rows, ElementsAre(RowIs(2, "good", "5")));

  r = ReadTable("text,label,text\n", Csv());
  EXPECT_THAT(std::string(r.status.message()), HasSubstr("column 'text' is named twice"));

  r = ReadTable("text,label\nok,a\n\"never\nclosed,b\nmore,a\n", Csv());
  EXPECT_EQ(r.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status.message()),
              HasSubstr("t.csv line 3: a quoted field opens here and is never closed"));

  r = ReadTable("", Csv());
  EXPECT_THAT(std::string(r.status.message()), HasSubstr("no header row"));

  TextTableOptions small;
  small.max_row_bytes = 8;
  r = ReadTable("text,label,another\n", small);
  EXPECT_THAT(std::string(r.status.message()), HasSubstr("(the header row): longer than 8"));
}

TEST(TextTableTest, JsonLinesTakeStringTextsAndStringOrIntegerLabels) {
  const std::string jsonl = absl::StrCat(
      "{\"text\": \"caf\\u00e9 \\\"ok\\\"\", \"label\": \"pos\", \"id\": [1, {\"x\": "
      "2}]}\r\n",                                         // 1
      "   \n",                                            // 2 blank
      "{\"text\": \"two\", \"label\": 3}\n",              // 3
      "{\"text\": \"three\", \"label\": 2.5}\n",          // 4
      "{\"text\": 7, \"label\": \"a\"}\n",                // 5
      "{\"label\": \"a\"}\n",                             // 6
      "not json\n",                                       // 7
      "{\"text\": \"bad \xff\", \"label\": \"a\"}\n",     // 8
      "{\"text\": \"nul \\u0000\", \"label\": \"a\"}\n",  // 9
      "{\"text\": \"deep\", \"label\": \"a\", \"x\": ", std::string(40, '['), std::string(40, ']'),
      "}\n",                                   // 10
      "{\"text\": \"t\", \"label\": true}\n",  // 11
      "{\"text\": \"last\", \"label\": -4}");  // 12
  const Read r = ReadTable(jsonl, Jsonl(), 3);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_THAT(r.rows, ElementsAre(RowIs(1, "caf\xc3\xa9 \"ok\"", "pos"), RowIs(3, "two", "3"),
                                  RowIs(12, "last", "-4")));
  EXPECT_THAT(r.rejected, ElementsAre(RejectedAt(4, "a number label must be an integer"),
                                      RejectedAt(5, "field 'text' is a number, not a string"),
                                      RejectedAt(6, "no field 'text'"),
                                      RejectedAt(7, "not a JSON object: Unexpected token."),
                                      RejectedAt(8, "the line, byte 15: 0xff is not UTF-8"),
                                      RejectedAt(9, "NUL"), RejectedAt(10, "JSON nested 41 deep"),
                                      RejectedAt(11, "is a boolean, not a string or an integer")));
  EXPECT_EQ(r.blank_lines, 1);
  for (const TextTableRejection& rejected : r.rejected) {
    EXPECT_EQ(rejected.reason.find('\n'), std::string::npos) << "one line: " << rejected.reason;
  }
}

// What a hostile review found: each is kept out (or refused) with a reason
// that says what is wrong, where, and in bounded words.
TEST(TextTableTest, EdgeCasesGetPreciseBoundedReasons) {
  // The bad byte of a field that starts on a later line than its row.
  Read r = ReadTable("text,label\n\"a\nb\",x\xff\n", Csv());
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_THAT(r.rejected, ElementsAre(RejectedAt(2, "column 'label', byte 2 (on line 3)")));

  // A lone CR counts once toward the row limit: this row is 10 bytes.
  TextTableOptions ten;
  ten.max_row_bytes = 10;
  r = ReadTable("text,label\nabcde\rfg,x\n", ten);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_THAT(r.rows, ElementsAre(RowIs(2, "abcde\rfg", "x")));

  // Lines that end in CR alone.
  r = ReadTable("text,label\rhi,pos\rbye,neg\r", Csv());
  EXPECT_THAT(std::string(r.status.message()), HasSubstr("lines that end in CR alone"));

  // A header column of a megabyte is named in 64 bytes.
  TextTableOptions roomy;
  roomy.max_row_bytes = 4 << 20;
  r = ReadTable(absl::StrCat(std::string(1 << 20, 'h'), ",label\n"), roomy);
  EXPECT_THAT(std::string(r.status.message()), HasSubstr("...' (1048576 bytes)"));
  EXPECT_LT(r.status.message().size(), 400u);

  const Read j = ReadTable(absl::StrCat("{'text': 'a', 'label': 'x'}\n",                      // 1
                                        "]]]{\"text\": \"a\", \"label\": \"x\"}\n",           // 2
                                        "{\"text\": \"a\", \"label\": 12345678901234567}\n",  // 3
                                        "{\"text\": \"a\", \"label\": \"x\", \"v\": [1]}\n",  // 4
                                        "{\"text\": \"a\", \"label\": \"x\", \"v\": [",
                                        absl::StrJoin(std::vector<int>(5000, 1), ","), "]}\n",  // 5
                                        "{\"text\": \"a\\nb\\u0000\", \"label\": \"x\"}\n"),    // 6
                           Jsonl());
  ASSERT_TRUE(j.status.ok()) << j.status;
  EXPECT_THAT(j.rows, ElementsAre(RowIs(4, "a", "x")));
  EXPECT_THAT(j.rejected, ElementsAre(RejectedAt(1, "strings and names must be in double quotes"),
                                      RejectedAt(2, "a bracket closes what was not opened"),
                                      RejectedAt(3, "12345678901234568, beyond the integers"),
                                      RejectedAt(5, "JSON of more than 4096 values"),
                                      RejectedAt(6, "a \\u escape makes a NUL character")));
}

TEST(TextTableTest, ALongJsonLineIsKeptOutWithoutBeingHeld) {
  TextTableOptions o = Jsonl();
  o.max_row_bytes = 64;
  const Read r =
      ReadTable(absl::StrCat("{\"text\": \"", std::string(10'000, 'a'), "\", \"label\": \"x\"}\n",
                             "{\"text\": \"b\", \"label\": \"y\"}\n"),
                o, 100);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_THAT(r.rows, ElementsAre(RowIs(2, "b", "y")));
  EXPECT_THAT(r.rejected, ElementsAre(RejectedAt(1, "longer than 64 bytes")));
}

// Random fields (separators, quotes, line breaks, carriage returns, UTF-8)
// written as RFC 4180 CSV read back the same, however the bytes are split.
TEST(TextTableTest, RandomQuotedTablesReadBackExactlyInAnyPieces) {
  std::mt19937 rng(7);
  const std::vector<std::string> alphabet = {
      "a", "b", " ", ",", "\"", "\n", "\r\n", "\t", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
      "z"};
  for (int trial = 0; trial < 50; ++trial) {
    const auto field = [&] {
      std::string f;
      const int n = static_cast<int>(rng() % 12);
      for (int i = 0; i < n; ++i) f += alphabet[rng() % alphabet.size()];
      return f;
    };
    const auto quote = [](const std::string& f) {
      std::string q = "\"";
      for (char c : f) q += c == '"' ? std::string("\"\"") : std::string(1, c);
      return q + "\"";
    };
    std::string csv = "label,text\n";
    std::vector<std::pair<std::string, std::string>> want;
    int64_t line = 2;
    std::vector<int64_t> lines;
    for (int row = 0; row < 20; ++row) {
      std::string text = field();
      const std::string label = absl::StrCat("c", rng() % 3);
      csv += absl::StrCat(label, ",", quote(text), "\n");
      want.emplace_back(text, label);
      lines.push_back(line);
      line += 1 + std::count(text.begin(), text.end(), '\n');
    }
    const Read r = ReadTable(csv, Csv(), 1 + rng() % 9);
    ASSERT_TRUE(r.status.ok()) << r.status;
    ASSERT_EQ(r.rows.size(), want.size()) << "trial " << trial;
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(r.rows[i].text, want[i].first) << "trial " << trial << " row " << i;
      EXPECT_EQ(r.rows[i].label, want[i].second);
      EXPECT_EQ(r.rows[i].line, lines[i]);
    }
  }
}

}  // namespace
}  // namespace kaizen::datasets
