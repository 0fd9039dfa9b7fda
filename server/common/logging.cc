#include "server/common/logging.h"

#include <cmath>
#include <cstdio>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace kaizen::common {

namespace {

// The length of the well-formed UTF-8 sequence at the start of `s` (RFC 3629:
// no overlong forms, no surrogates, nothing above U+10FFFF), or 0.
size_t Utf8SequenceLength(absl::string_view s) {
  const auto byte = [&s](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char lead = byte(0);
  size_t n = 0;
  unsigned char min = 0x80, max = 0xbf;  // bounds of the second byte
  if (lead >= 0xc2 && lead <= 0xdf) {
    n = 2;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    n = 3;
    if (lead == 0xe0) min = 0xa0;  // overlong
    if (lead == 0xed) max = 0x9f;  // surrogates
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    n = 4;
    if (lead == 0xf0) min = 0x90;  // overlong
    if (lead == 0xf4) max = 0x8f;  // above U+10FFFF
  } else {
    return 0;
  }
  if (s.size() < n || byte(1) < min || byte(1) > max) return 0;
  for (size_t i = 2; i < n; ++i) {
    if (byte(i) < 0x80 || byte(i) > 0xbf) return 0;
  }
  return n;
}

}  // namespace

std::string JsonQuote(absl::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      // Valid UTF-8 passes through; each byte of anything else becomes U+FFFD.
      const size_t n = Utf8SequenceLength(s.substr(i));
      if (n == 0) {
        out += "\\ufffd";
        ++i;
      } else {
        out.append(s.data() + i, n);
        i += n;
      }
      continue;
    }
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
        if (c < 0x20 || c == 0x7f) {
          out += absl::StrFormat("\\u%04x", c);
        } else {
          out += static_cast<char>(c);
        }
    }
    ++i;
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
