// Usage errors (wrong arguments, unknown or malformed flags) travel as an
// absl::Status like every other error, marked so that main can tell them
// from failed calls: they exit with 2, everything else with 1.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace kaizen::cli {

// INVALID_ARGUMENT marked as a usage error.
absl::Status UsageError(const std::string& message);
bool IsUsageError(const absl::Status& status);

// True when the command line asks for help (--help, -h, or the command
// "help"); flags after "--" do not count.
bool WantsHelp(int argc, char** argv);

// Checks every flag on the command line against the registered flags and
// their value syntax before absl::ParseCommandLine runs, which would exit
// with status 1 on its own. Returns a usage error for the first bad flag.
absl::Status CheckFlags(int argc, char** argv);

// Abseil reserves the name --version for a flag of its own, so kaizenctl's
// --version=V (a model version, for predict) is taken out of argv before
// Abseil's parser runs. Removes each "--version=V" and "--version V" (V all
// digits) before "--" from argv, adjusting *argc, and sets *version to the
// last V (0 when there is none). A usage error for a V that is not a
// non-negative integer.
absl::Status TakeVersionFlag(int* argc, char** argv, int64_t* version);

// The server to use when --server is not given: $KAIZEN_SERVER, else
// localhost:50051.
std::string DefaultServer();

}  // namespace kaizen::cli
