// The text table reader (CSV, TSV, JSON Lines): quoting, line breaks, the row
// limit, UTF-8 checks and the JSON parser behind it.
// Input: one byte choosing the format (mod 3) and where the rest is split
// into two Feed calls, then the file's bytes.
#include <cstdint>
#include <string>

#include "fuzz/fuzz_util.h"
#include "server/common/utf8.h"
#include "server/datasets/text_table.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using kaizen::datasets::TextTableFormat;
  if (size < 1) return 0;
  kaizen::datasets::TextTableOptions options;
  options.format = static_cast<TextTableFormat>(data[0] % 3);
  options.max_row_bytes = 256;
  options.max_columns = 16;
  options.max_json_depth = 8;
  const std::string bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  const int64_t lines = 1 + static_cast<int64_t>(std::count(bytes.begin(), bytes.end(), '\n'));
  int64_t handed_out = 0;
  int64_t last_line = 0;
  const auto valid = [](const std::string& s) {
    return kaizen::common::IsValidUtf8(s) && s.find('\0') == std::string::npos;
  };
  kaizen::datasets::TextTableReader reader(
      options, "fuzz",
      [&](kaizen::datasets::TextTableRow row) {
        kaizen::fuzz::Check(valid(row.text) && valid(row.label) && !row.label.empty());
        kaizen::fuzz::Check(row.line > last_line && row.line <= lines);
        kaizen::fuzz::Check(static_cast<int64_t>(row.text.size()) <= options.max_row_bytes);
        last_line = row.line;
        ++handed_out;
        return absl::OkStatus();
      },
      [&](kaizen::datasets::TextTableRejection r) {
        kaizen::fuzz::Check(r.line > last_line && r.line <= lines && !r.reason.empty());
        last_line = r.line;
        ++handed_out;
        return absl::OkStatus();
      });
  const size_t split = (data[0] / 3) * bytes.size() / 86;
  absl::Status st = reader.Feed(absl::string_view(bytes).substr(0, split));
  if (st.ok()) st = reader.Feed(absl::string_view(bytes).substr(split));
  if (st.ok()) st = reader.Finish();
  if (st.ok()) kaizen::fuzz::Check(handed_out == reader.rows());
  return 0;
}
