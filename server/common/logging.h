// Structured logs: one JSON object per line on stderr, so that Kubernetes log
// collectors can parse them. Thread-safe.
#pragma once

#include <initializer_list>
#include <string>
#include <utility>

#include "absl/strings/string_view.h"

namespace kaizen::common {

enum class LogLevel { kDebug, kInfo, kWarning, kError };

// A field value is pre-rendered: strings are quoted, numbers are not.
struct LogField {
  LogField(absl::string_view k, absl::string_view v);
  LogField(absl::string_view k, const char* v);
  LogField(absl::string_view k, const std::string& v);
  LogField(absl::string_view k, int64_t v);
  LogField(absl::string_view k, int v);
  LogField(absl::string_view k, double v);
  LogField(absl::string_view k, bool v);
  std::string key;
  std::string json_value;
};

void Log(LogLevel level, absl::string_view message, std::initializer_list<LogField> fields = {});

inline void LogInfo(absl::string_view m, std::initializer_list<LogField> f = {}) {
  Log(LogLevel::kInfo, m, f);
}
inline void LogWarning(absl::string_view m, std::initializer_list<LogField> f = {}) {
  Log(LogLevel::kWarning, m, f);
}
inline void LogError(absl::string_view m, std::initializer_list<LogField> f = {}) {
  Log(LogLevel::kError, m, f);
}

// Quotes and escapes `s` as a JSON string. Bytes that are not well-formed
// UTF-8 become U+FFFD, so the result is always valid JSON.
std::string JsonQuote(absl::string_view s);

}  // namespace kaizen::common
