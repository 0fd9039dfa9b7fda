#include "server/sandbox/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace kaizen::sandbox {
namespace {

absl::Status Errno(absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", strerror(errno)));
}

// Owns a descriptor.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Reset(); }
  int get() const { return fd_; }
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

absl::StatusOr<int> InputFd(const std::string& input) {
  const int fd = memfd_create("kaizen-subprocess-input", MFD_CLOEXEC);
  if (fd < 0) return Errno("memfd_create");
  size_t done = 0;
  while (done < input.size()) {
    const ssize_t n = ::write(fd, input.data() + done, input.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      return Errno("writing the child's input");
    }
    done += static_cast<size_t>(n);
  }
  if (::lseek(fd, 0, SEEK_SET) != 0) {
    ::close(fd);
    return Errno("lseek");
  }
  return fd;
}

// Reads what is available on `fd` into `out`; false at EOF or error.
bool Drain(int fd, std::string* out, size_t limit, bool* too_large) {
  char buf[64 << 10];
  const ssize_t n = ::read(fd, buf, sizeof(buf));
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return true;
  if (n <= 0) return false;
  if (out->size() + static_cast<size_t>(n) > limit) {
    *too_large = true;
    return false;
  }
  out->append(buf, static_cast<size_t>(n));
  return true;
}

absl::StatusOr<pid_t> Spawn(const SubprocessOptions& options, int in_fd, int out_fd, int err_fd) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in_fd, 0);
  posix_spawn_file_actions_adddup2(&actions, out_fd, 1);
  posix_spawn_file_actions_adddup2(&actions, err_fd, 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  // The server blocks SIGTERM/SIGINT in every thread; the child must not
  // inherit that mask or any handler.
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
  std::vector<char*> argv, envp;
  argv.push_back(const_cast<char*>(options.binary.c_str()));
  for (const std::string& a : options.args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const std::string& e : options.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  pid_t pid = 0;
  const int rc =
      posix_spawn(&pid, options.binary.c_str(), &actions, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    return absl::InternalError(absl::StrCat("cannot start ", options.binary, ": ", strerror(rc)));
  }
  return pid;
}

void Reap(pid_t pid, SubprocessResult* result) {
  int status = 0;
  struct rusage usage {};
  while (::wait4(pid, &status, 0, &usage) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) result->exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result->term_signal = WTERMSIG(status);
  result->max_rss_bytes = static_cast<int64_t>(usage.ru_maxrss) * 1024;
  result->cpu_seconds = usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
                        (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

}  // namespace

absl::StatusOr<SubprocessResult> RunSubprocess(SubprocessOptions options) {
  absl::StatusOr<int> input = InputFd(options.input);
  std::string().swap(options.input);
  if (!input.ok()) return input.status();
  Fd in_fd(*input);
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) return Errno("pipe2");
  Fd out_read(out_pipe[0]), out_write(out_pipe[1]);
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) return Errno("pipe2");
  Fd err_read(err_pipe[0]), err_write(err_pipe[1]);

  const absl::Time start = absl::Now();
  absl::StatusOr<pid_t> pid = Spawn(options, in_fd.get(), out_write.get(), err_write.get());
  if (!pid.ok()) return pid.status();
  in_fd.Reset();
  out_write.Reset();
  err_write.Reset();

  SubprocessResult result;
  const absl::Time deadline = start + options.timeout;
  bool out_open = true, err_open = true;
  while (out_open || err_open) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      result.timed_out = true;
      break;
    }
    struct pollfd fds[2] = {{out_open ? out_read.get() : -1, POLLIN, 0},
                            {err_open ? err_read.get() : -1, POLLIN, 0}};
    const int ready = ::poll(
        fds, 2, static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(left) + 1, 1000)));
    if (ready < 0 && errno != EINTR) break;
    if (fds[0].revents != 0) {
      out_open = Drain(out_read.get(), &result.stdout_bytes, options.max_stdout_bytes,
                       &result.output_too_large);
    }
    if (fds[1].revents != 0) {
      err_open = Drain(err_read.get(), &result.stderr_bytes, options.max_stderr_bytes,
                       &result.output_too_large);
    }
    if (result.output_too_large) break;
  }
  // Both pipes closed: the child is exiting. Otherwise it overstayed or
  // wrote too much; either way, wait no longer than the deadline.
  while (!result.timed_out && !result.output_too_large) {
    siginfo_t info{};
    if (::waitid(P_PID, static_cast<id_t>(*pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
        info.si_pid == *pid) {
      break;
    }
    if (absl::Now() >= deadline) {
      result.timed_out = true;
      break;
    }
    absl::SleepFor(absl::Milliseconds(2));
  }
  if (result.timed_out || result.output_too_large) ::kill(-*pid, SIGKILL);
  Reap(*pid, &result);
  result.wall = absl::Now() - start;
  return result;
}

absl::StatusOr<pid_t> StartProcess(const std::string& binary, const std::vector<std::string>& args,
                                   const std::vector<std::string>& env,
                                   const std::string& stderr_path) {
  const int null_in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const int null_out = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  const int err = ::open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  absl::StatusOr<pid_t> pid = absl::InternalError(
      absl::StrCat("cannot open /dev/null or ", stderr_path, ": ", strerror(errno)));
  if (null_in >= 0 && null_out >= 0 && err >= 0) {
    SubprocessOptions options;
    options.binary = binary;
    options.args = args;
    options.env = env;
    pid = Spawn(options, null_in, null_out, err);
    if (!pid.ok()) pid = absl::FailedPreconditionError(pid.status().message());
  }
  for (int fd : {null_in, null_out, err}) {
    if (fd >= 0) ::close(fd);
  }
  return pid;
}

absl::Status MakeUndumpable() {
  if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
    return absl::InternalError(absl::StrCat("prctl(PR_SET_DUMPABLE, 0): ", strerror(errno)));
  }
  return absl::OkStatus();
}

std::string BesideThisExecutable(const std::string& name) {
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return (self.parent_path() / name).string();
}

std::string DescribeEnd(const SubprocessResult& result) {
  if (result.timed_out) {
    return absl::StrCat("timed out after ", absl::FormatDuration(result.wall), " (wall clock)");
  }
  if (result.output_too_large) return "wrote more output than allowed";
  if (result.term_signal != 0) {
    return absl::StrCat("killed by signal ", result.term_signal, " (SIG",
                        sigabbrev_np(result.term_signal) ? sigabbrev_np(result.term_signal) : "?",
                        ": ", strsignal(result.term_signal), ")");
  }
  return absl::StrCat("exited with code ", result.exit_code);
}

}  // namespace kaizen::sandbox
