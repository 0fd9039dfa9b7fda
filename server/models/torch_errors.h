// Turns exceptions thrown by LibTorch into one readable line for a Status.
// Torch messages carry C++ backtraces (c10::Error) or TorchScript tracebacks
// (the interpreter's std::runtime_error) that are noise to an API caller.
#pragma once

#include <exception>
#include <string>

namespace kaizen::models {

// The line that says what went wrong: the first line of a c10::Error without
// its backtrace, or the final "RuntimeError: ..." line of a TorchScript
// interpreter traceback (without the "RuntimeError: " prefix).
std::string TorchErrorSummary(const std::exception& e);

}  // namespace kaizen::models
