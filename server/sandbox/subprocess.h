// Runs a helper binary as a short-lived child process with posix_spawn (safe
// from a threaded server, unlike fork), feeds it bytes on stdin, collects
// bounded stdout and stderr, and kills it when the wall-clock deadline
// passes. The child gets an empty environment apart from `env`, default
// signal handling, no inherited descriptors but 0-2, and its own process
// group.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace kaizen::sandbox {

struct SubprocessOptions {
  // Absolute path of the binary and its arguments (argv[1...]).
  std::string binary;
  std::vector<std::string> args;
  // "NAME=value" entries; nothing of the parent's environment is passed.
  std::vector<std::string> env;
  // Written to the child's stdin (through a memfd, so the parent never
  // blocks on, or gets SIGPIPE from, a child that does not read).
  std::string input;
  // Killed (SIGKILL, whole process group) when still running after this.
  absl::Duration timeout = absl::Seconds(60);
  // Output beyond these is an error and the child is killed.
  size_t max_stdout_bytes = 16 << 20;
  size_t max_stderr_bytes = 64 << 10;
};

struct SubprocessResult {
  // Exit code when the child exited, else -1.
  int exit_code = -1;
  // The signal that ended it, else 0.
  int term_signal = 0;
  bool timed_out = false;
  bool output_too_large = false;
  std::string stdout_bytes;
  std::string stderr_bytes;
  absl::Duration wall;
  // Peak resident set size of the child, from wait4.
  int64_t max_rss_bytes = 0;
  double cpu_seconds = 0;
};

// INTERNAL when the child cannot be started (missing binary, no memory);
// otherwise the result, whatever the child did. `options.input` is released
// once it is in the memfd, so a large input is not held twice while the
// child runs (pass it with std::move).
absl::StatusOr<SubprocessResult> RunSubprocess(SubprocessOptions options);

// Makes this process non-dumpable (prctl PR_SET_DUMPABLE 0): its /proc
// files that reveal memory or environment (mem, environ, maps, ...) and
// ptrace need CAP_SYS_PTRACE, so a helper it starts, which runs as the same
// user, cannot read its secrets even if code in the helper is taken over.
// No core dumps either. Inherited by threads, not by helpers (exec resets
// it).
absl::Status MakeUndumpable();

// The helper binary `name` in the running executable's folder (where the
// build and the image put kaizen-model-inspector and
// kaizen-tokenizer-trainer beside kaizen-server).
std::string BesideThisExecutable(const std::string& name);

// Starts `binary` with `args` (argv[1...]) and `env` ("NAME=value", nothing
// else of the parent's) in the background, set up as RunSubprocess's
// children are (default signal handling, its own process group), with stdin
// and stdout on /dev/null and stderr into `stderr_path` (created 0600,
// truncated). Returns its pid, for the caller to wait for; FailedPrecondition
// naming the binary when it cannot be started.
absl::StatusOr<pid_t> StartProcess(const std::string& binary, const std::vector<std::string>& args,
                                   const std::vector<std::string>& env,
                                   const std::string& stderr_path);

// "exited with code 3", "killed by signal 9 (Killed)", "timed out after 5s".
std::string DescribeEnd(const SubprocessResult& result);

}  // namespace kaizen::sandbox
