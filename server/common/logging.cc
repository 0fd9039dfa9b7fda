#include "server/common/logging.h"

#include <cmath>
#include <cstdio>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace kaizen::common {

std::string JsonQuote(absl::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          out += absl::StrFormat("\\u%04x", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
  return out;
}

LogField::LogField(absl::string_view k, absl::string_view v) : key(k), json_value(JsonQuote(v)) {}
LogField::LogField(absl::string_view k, const char* v) : key(k), json_value(JsonQuote(v)) {}
LogField::LogField(absl::string_view k, const std::string& v) : key(k), json_value(JsonQuote(v)) {}
LogField::LogField(absl::string_view k, int64_t v) : key(k), json_value(absl::StrCat(v)) {}
LogField::LogField(absl::string_view k, int v) : key(k), json_value(absl::StrCat(v)) {}
// JSON has no NaN or infinities; they are written as strings (a diverged
// loss is logged).
LogField::LogField(absl::string_view k, double v)
    : key(k),
      json_value(std::isfinite(v) ? absl::StrFormat("%.6g", v)
                                  : JsonQuote(std::isnan(v) ? "NaN"
                                              : v > 0       ? "Infinity"
                                                            : "-Infinity")) {}
LogField::LogField(absl::string_view k, bool v) : key(k), json_value(v ? "true" : "false") {}

void Log(LogLevel level, absl::string_view message, std::initializer_list<LogField> fields) {
  static const char* const kNames[] = {"debug", "info", "warning", "error"};
  std::string line = absl::StrCat(
      "{\"ts\":\"", absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()),
      "\",\"level\":\"", kNames[static_cast<int>(level)], "\",\"msg\":", JsonQuote(message));
  for (const LogField& f : fields) {
    absl::StrAppend(&line, ",", JsonQuote(f.key), ":", f.json_value);
  }
  line += "}\n";
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace kaizen::common
