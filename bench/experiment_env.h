// What the in-process experiments in bench/ share (transfer/transfer_experiment.cc,
// text/text_kshot.cc): settings from the environment, and ending the run
// with a message when something it needs fails.
#pragma once

#include <cstdlib>
#include <iostream>
#include <string>

#include "absl/status/statusor.h"

namespace kaizen::bench {

// The integer in environment variable `name`, or `fallback` when unset or empty.
inline int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::atoi(v) : fallback;
}

inline std::string EnvStr(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

// Ends the experiment `who` with `what` (exit status 1) when `ok` is false.
inline void Require(bool ok, const char* who, const std::string& what) {
  if (ok) return;
  std::cerr << who << ": " << what << "\n";
  std::exit(1);
}

}  // namespace kaizen::bench
