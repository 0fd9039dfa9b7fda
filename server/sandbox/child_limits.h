// What a sandboxed helper process does to itself before it reads anything
// untrusted: resource limits (rlimits) and a seccomp filter that leaves it
// able to compute and to read files, and nothing else. Used by
// kaizen-model-inspector and kaizen-tokenizer-trainer; the parent side is
// subprocess.h.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

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
// socket, exec, ptrace, mount or namespace change, any signal to another
// process, a new process (fork, vfork, clone without CLONE_THREAD), a new
// session or process group, SysV or POSIX IPC objects, and changes to
// another process's limits, priority or signal-driven I/O (F_SETOWN,
// F_SETSIG) fail with EACCES or EPERM; clone3 says ENOSYS, so that threads
// are made with clone (LibTorch needs them). Irreversible for the calling
// process. Not covered: reading what the user may read (/proc of the
// parent included); the helpers' parent should run them as another user
// where that matters.
absl::Status ConfineCurrentProcess(const ChildLimits& limits, int keep_fd = -1);

// Writes all of `bytes` to `fd` (a helper's answer), retrying short writes
// and interrupted ones; false on any other failure.
bool WriteAll(int fd, absl::string_view bytes);

}  // namespace kaizen::sandbox
