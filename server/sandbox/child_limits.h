// What a sandboxed helper process does to itself before it reads anything
// untrusted: resource limits (rlimits) and a seccomp filter that leaves it
// able to compute and to read files, and nothing else. Used by
// kaizen-model-inspector and kaizen-tokenizer-trainer; the parent side is
// subprocess.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

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
  // Files and directories the helper may read besides the system's
  // (kSystemReadable), under Landlock. Each must exist.
  std::vector<std::string> readable;
};

// What every confined helper may read under Landlock: the system's
// libraries and shared data, its own /proc entries, CPU and memory facts,
// and the harmless devices. Paths this system lacks are skipped.
inline constexpr const char* kSystemReadable[] = {
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/libx32",
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/proc/self",
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/sys/devices/system/cpu",
    "/dev/null",
    "/dev/zero",
    "/dev/urandom",
    "/dev/random",
};

// The Landlock ABI version the running kernel offers; 0 when it has none
// (older than Linux 5.13, or Landlock not enabled at boot).
int LandlockAbi();

// FailedPrecondition unless the calling process has one thread (what follows
// would not reach threads already running). Then closes every descriptor
// above 2 but `keep_fd` (-1: none); where the kernel has Landlock
// (LandlockAbi() > 0), applies a Landlock rule set that limits what the
// process may open to reading kSystemReadable and limits.readable: the data
// directory, TLS keys, token files and the parent's /proc entries are out of
// reach (EACCES), and nothing may be executed, written, created, removed,
// linked or renamed (without Landlock, logged by the server at start-up,
// reads stay as open as the user's); installs a seccomp filter under which
// any open for writing, creating, removing, renaming or changing a file, any
// socket, exec, ptrace, mount or namespace change, any signal to another
// process, a new process (fork, vfork, clone without CLONE_THREAD), a new
// session or process group, SysV or POSIX IPC objects, and changes to
// another process's limits, priority or signal-driven I/O (F_SETOWN,
// F_SETSIG) fail with EACCES or EPERM, and clone3 says ENOSYS, so that
// threads are made with clone (LibTorch needs them); and only then sets the
// limits, plus no core dumps and no file growth (RLIMIT_FSIZE 0).
// Irreversible for the calling process.
absl::Status ConfineCurrentProcess(const ChildLimits& limits, int keep_fd = -1);

// Writes all of `bytes` to `fd` (a helper's answer), retrying short writes
// and interrupted ones; false on any other failure.
bool WriteAll(int fd, absl::string_view bytes);

}  // namespace kaizen::sandbox
