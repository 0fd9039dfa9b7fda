#include "server/models/torch_errors.h"

#include <c10/util/Exception.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace kaizen::models {
namespace {

constexpr absl::string_view kInterpreterPreamble =
    "The following operation failed in the TorchScript interpreter";

}  // namespace

std::string TorchErrorSummary(const std::exception& e) {
  absl::string_view text;
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) {
    text = c10_error->what_without_backtrace();
  } else {
    text = e.what();
  }
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n', absl::SkipWhitespace());
  if (lines.empty()) return "unknown error";
  if (absl::StartsWith(lines.front(), kInterpreterPreamble)) {
    // The traceback ends with "<ExceptionType>: <message>".
    absl::string_view last = absl::StripAsciiWhitespace(lines.back());
    absl::ConsumePrefix(&last, "RuntimeError: ");
    return std::string(last);
  }
  return std::string(absl::StripAsciiWhitespace(lines.front()));
}

}  // namespace kaizen::models
