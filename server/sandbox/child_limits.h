// What a sandboxed helper process does to itself before it reads anything
// untrusted: resource limits (rlimits) and a seccomp filter that leaves it
// able to compute and to read files, and nothing else. Used by
// kaizen-model-inspector; the parent side is subprocess.h.
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace kaizen::sandbox {

struct ChildLimits {
  // RLIMIT_AS: address space, bytes (allocations beyond it fail).
  int64_t memory_bytes = int64_t{4} << 30;
  // RLIMIT_CPU: CPU seconds (SIGXCPU, then SIGKILL one second later).
  int64_t cpu_seconds = 120;
  // RLIMIT_NOFILE.
  int64_t open_files = 64;
};

// Closes every descriptor above 2 but `keep_fd` (-1: none), sets the limits (plus no core dumps and
// no file growth: RLIMIT_FSIZE 0), and installs a seccomp filter under which
// any open for writing, creating, removing, renaming or changing a file, any
// socket, exec, ptrace, mount or namespace change, and any signal to another
// process fails with EACCES or EPERM. Threads (clone) stay allowed: LibTorch
// needs them. Irreversible for the calling process.
absl::Status ConfineCurrentProcess(const ChildLimits& limits, int keep_fd = -1);

}  // namespace kaizen::sandbox
