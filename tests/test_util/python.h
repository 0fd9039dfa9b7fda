// Runs Debian's python3 (the interpreter the build found, which imports torch
// and torchvision) for tests that check a file against PyTorch itself.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kaizen::test_util {

// Runs the interpreter with `args` (a script's path and its arguments, or
// "-c" and code), without a shell. Returns what it wrote to standard output;
// its standard error goes to the test's log. An error when it cannot start or
// exits with a status other than 0 (the message has the status and output).
absl::StatusOr<std::string> RunPython(const std::vector<std::string>& args);

// Runs argv[0] (a path, or a name looked up in PATH) with the rest of `argv`,
// as RunPython does.
absl::StatusOr<std::string> RunProgram(std::vector<std::string> argv);

// The path of tests/fixtures/<name> in the source tree.
std::string FixturePath(const std::string& name);

// Writes `source` to `script_path` and runs it with `args`.
absl::StatusOr<std::string> RunPythonSource(const std::string& source,
                                            const std::string& script_path,
                                            const std::vector<std::string>& args = {});

// Runs tests/fixtures/<name> from the source tree with `args`.
absl::StatusOr<std::string> RunPythonFixture(const std::string& name,
                                             const std::vector<std::string>& args);

// False when the interpreter cannot import torch (the tests that need it skip).
bool PythonHasTorch();

}  // namespace kaizen::test_util
