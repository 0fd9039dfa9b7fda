#include "client/cli/usage.h"

#include <algorithm>
#include <cstdlib>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace kaizen::cli {
namespace {

constexpr absl::string_view kUsagePayload = "kaizen.cli/usage";

// Flags that absl::ParseCommandLine interprets itself; their values are not
// ours to check.
bool IsParserFlag(absl::string_view name) {
  return name == "flagfile" || name == "fromenv" || name == "tryfromenv" || name == "undefok";
}

}  // namespace

absl::Status UsageError(const std::string& message) {
  absl::Status status = absl::InvalidArgumentError(message);
  status.SetPayload(kUsagePayload, absl::Cord("1"));
  return status;
}

bool IsUsageError(const absl::Status& status) {
  return status.GetPayload(kUsagePayload).has_value();
}

bool WantsHelp(int argc, char** argv) {
  bool seen_positional = false;
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--") break;
    if (arg == "--help" || arg == "-help" || arg == "-h") return true;
    if (!absl::StartsWith(arg, "-")) {
      if (!seen_positional && arg == "help") return true;
      seen_positional = true;
    }
  }
  return false;
}

absl::Status CheckFlags(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") break;
    if (arg.size() < 2 || arg[0] != '-') continue;
    arg.remove_prefix(arg[1] == '-' ? 2 : 1);
    const size_t eq = arg.find('=');
    const absl::string_view name = arg.substr(0, eq);
    const bool has_value = eq != absl::string_view::npos;

    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && !has_value && absl::StartsWith(name, "no")) {
      absl::CommandLineFlag* negated = absl::FindCommandLineFlag(name.substr(2));
      if (negated != nullptr && negated->IsOfType<bool>()) continue;
    }
    if (flag == nullptr || flag->IsRetired()) {
      return UsageError(absl::StrCat("unknown flag --", name));
    }
    if (IsParserFlag(name)) {
      if (!has_value) ++i;
      continue;
    }
    std::string value;
    if (has_value) {
      value = std::string(arg.substr(eq + 1));
    } else if (flag->IsOfType<bool>()) {
      continue;
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return UsageError(absl::StrCat("flag --", name, " needs a value"));
    }
    // Parsing sets the flag; absl::ParseCommandLine sets it again to the
    // same value right after.
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      return UsageError(absl::StrCat("bad value \"", value, "\" for --", name, ": ", error));
    }
  }
  return absl::OkStatus();
}

absl::Status TakeVersionFlag(int* argc, char** argv, int64_t* version) {
  *version = 0;
  auto all_digits = [](absl::string_view text) {
    return !text.empty() &&
           std::all_of(text.begin(), text.end(), [](char c) { return absl::ascii_isdigit(c); });
  };
  int kept = 1;
  int i = 1;
  for (; i < *argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--") break;
    absl::string_view value;
    bool taken = false;
    if (absl::StartsWith(arg, "--version=") || absl::StartsWith(arg, "-version=")) {
      value = arg.substr(arg.find('=') + 1);
      taken = true;
    } else if ((arg == "--version" || arg == "-version") && i + 1 < *argc &&
               all_digits(argv[i + 1])) {
      value = argv[++i];
      taken = true;
    }
    if (!taken) {
      argv[kept++] = argv[i];
      continue;
    }
    int64_t parsed = 0;
    if (!absl::SimpleAtoi(value, &parsed) || parsed < 0) {
      return UsageError(absl::StrCat("bad value \"", value,
                                     "\" for --version: expected a model "
                                     "version, a non-negative integer"));
    }
    *version = parsed;
  }
  for (; i < *argc; ++i) argv[kept++] = argv[i];
  *argc = kept;
  argv[kept] = nullptr;
  return absl::OkStatus();
}

std::string DefaultServer() {
  const char* env = std::getenv("KAIZEN_SERVER");
  if (env != nullptr && env[0] != '\0') return env;
  return "localhost:50051";
}

}  // namespace kaizen::cli
