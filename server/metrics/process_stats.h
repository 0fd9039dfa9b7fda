// What the kernel says about this process (/proc/self), for the standard
// process_* metrics that Prometheus client libraries export.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"

namespace kaizen::metrics {

struct ProcessStats {
  double cpu_seconds = 0;         // user + system CPU time
  int64_t resident_bytes = 0;     // resident set size
  int64_t virtual_bytes = 0;      // virtual memory size
  double start_time_seconds = 0;  // since the Unix epoch
  int64_t open_fds = 0;           // entries in /proc/self/fd
  int64_t max_fds = 0;            // RLIMIT_NOFILE, soft limit
  int64_t threads = 0;            // threads of the process
};

// Reads /proc/self/stat, /proc/self/fd and /proc/stat (boot time).
// Unavailable when /proc cannot be read (not Linux, no /proc mounted).
absl::StatusOr<ProcessStats> ReadProcessStats();

}  // namespace kaizen::metrics
