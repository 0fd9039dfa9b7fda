#include "server/sandbox/child_limits.h"

#include <fcntl.h>
#include <linux/landlock.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace kaizen::sandbox {
namespace {

absl::Status SetLimit(int resource, const char* name, rlim_t soft, rlim_t hard) {
  const struct rlimit limit = {soft, hard};
  if (::setrlimit(resource, &limit) != 0) {
    return absl::InternalError(absl::StrCat("setrlimit(", name, "): ", strerror(errno)));
  }
  return absl::OkStatus();
}

// Syscalls that change the file system, reach the network, start programs,
// or reach other processes. Names missing on this architecture are skipped.
constexpr const char* kDenied[] = {
    "creat",
    "unlink",
    "unlinkat",
    "rename",
    "renameat",
    "renameat2",
    "mkdir",
    "mkdirat",
    "rmdir",
    "link",
    "linkat",
    "symlink",
    "symlinkat",
    "chmod",
    "fchmod",
    "fchmodat",
    "chown",
    "fchown",
    "lchown",
    "fchownat",
    "truncate",
    "ftruncate",
    "mknod",
    "mknodat",
    "utime",
    "utimes",
    "utimensat",
    "futimesat",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
    "socket",
    "socketpair",
    "connect",
    "bind",
    "listen",
    "accept",
    "accept4",
    "execve",
    "execveat",
    "fork",
    "vfork",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kill",
    "tkill",
    "rt_sigqueueinfo",
    "pidfd_open",
    "pidfd_send_signal",
    "pidfd_getfd",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "setns",
    "unshare",
    "open_by_handle_at",
    "name_to_handle_at",
    "fanotify_init",
    "inotify_init",
    "inotify_init1",
    "bpf",
    "perf_event_open",
    "keyctl",
    "add_key",
    "request_key",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "setuid",
    "setgid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
    "setgroups",
    "io_uring_setup",
    "userfaultfd",
    "memfd_create",
    "openat2",
    "copy_file_range",
    "sendfile",
    "fallocate",
    "quotactl",
    "syslog",
    "sethostname",
    "setdomainname",
    "settimeofday",
    "clock_settime",
    "adjtimex",
    // A new session or group would escape the kill of the process group.
    "setsid",
    "setpgid",
    // Objects that outlive the process.
    "shmget",
    "shmat",
    "msgget",
    "semget",
    "mq_open",
    // Another process's priority.
    "setpriority",
    "ioprio_set",
};

// Syscalls newer than some libseccomp releases know by name, denied by
// number (the same on every architecture since Linux 5.1's unified table):
// fchmodat2, lsm_set_self_attr, setxattrat, removexattrat, open_tree_attr.
constexpr int kDeniedByNumber[] = {452, 460, 463, 466, 467};

absl::Status Rule(scmp_filter_ctx ctx, uint32_t action, const char* name, unsigned count,
                  const scmp_arg_cmp* args) {
  const int nr = seccomp_syscall_resolve_name(name);
  if (nr == __NR_SCMP_ERROR) return absl::OkStatus();
  const int rc = seccomp_rule_add_array(ctx, action, nr, count, args);
  // -EDOM etc.: a pseudo-syscall this architecture lacks.
  if (rc != 0 && rc != -EDOM && rc != -EEXIST) {
    return absl::InternalError(absl::StrCat("seccomp rule for ", name, ": ", strerror(-rc)));
  }
  return absl::OkStatus();
}

absl::Status InstallFilter() {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (ctx == nullptr) return absl::InternalError("seccomp_init failed");
  absl::Status st;
  for (const char* name : kDenied) {
    if (st.ok()) st = Rule(ctx, SCMP_ACT_ERRNO(EPERM), name, 0, nullptr);
  }
  // open()/openat() for reading only.
  for (int flag : {O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_APPEND}) {
    const scmp_arg_cmp open_flags = SCMP_A1(SCMP_CMP_MASKED_EQ, static_cast<scmp_datum_t>(flag),
                                            static_cast<scmp_datum_t>(flag));
    const scmp_arg_cmp openat_flags = SCMP_A2(SCMP_CMP_MASKED_EQ, static_cast<scmp_datum_t>(flag),
                                              static_cast<scmp_datum_t>(flag));
    if (st.ok()) st = Rule(ctx, SCMP_ACT_ERRNO(EACCES), "open", 1, &open_flags);
    if (st.ok()) st = Rule(ctx, SCMP_ACT_ERRNO(EACCES), "openat", 1, &openat_flags);
  }
  for (int nr : kDeniedByNumber) {
    if (!st.ok()) break;
    const int rc = seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0, nullptr);
    if (rc != 0 && rc != -EDOM && rc != -EEXIST) {
      st = absl::InternalError(absl::StrCat("seccomp rule for syscall ", nr, ": ", strerror(-rc)));
    }
  }
  // New threads, not new processes: clone without CLONE_THREAD is a fork
  // (fork and vfork are denied above). clone3's flags sit in a struct a
  // filter cannot read, so it says ENOSYS and the C library falls back to
  // clone for its threads.
  const scmp_arg_cmp not_a_thread =
      SCMP_A0(SCMP_CMP_MASKED_EQ, static_cast<scmp_datum_t>(CLONE_THREAD), 0);
  if (st.ok()) st = Rule(ctx, SCMP_ACT_ERRNO(EPERM), "clone", 1, &not_a_thread);
  if (st.ok()) st = Rule(ctx, SCMP_ACT_ERRNO(ENOSYS), "clone3", 0, nullptr);
  // Limits of this process only (glibc's setrlimit passes pid 0).
  const scmp_arg_cmp other_pid = SCMP_A0(SCMP_CMP_NE, 0);
  if (st.ok()) st = Rule(ctx, SCMP_ACT_ERRNO(EPERM), "prlimit64", 1, &other_pid);
  // No signal-driven I/O aimed at another process (F_SETOWN with F_SETSIG
  // would deliver any signal to it).
  for (int cmd : {F_SETOWN, F_SETOWN_EX, F_SETSIG}) {
    const scmp_arg_cmp command = SCMP_A1(SCMP_CMP_EQ, static_cast<scmp_datum_t>(cmd));
    if (st.ok()) st = Rule(ctx, SCMP_ACT_ERRNO(EPERM), "fcntl", 1, &command);
  }
  // Signals only to this process (abort() raises SIGABRT with tgkill).
  const scmp_arg_cmp other_process = SCMP_A0(SCMP_CMP_NE, static_cast<scmp_datum_t>(::getpid()));
  if (st.ok()) st = Rule(ctx, SCMP_ACT_ERRNO(EPERM), "tgkill", 1, &other_process);
  if (st.ok()) st = Rule(ctx, SCMP_ACT_ERRNO(EPERM), "rt_tgsigqueueinfo", 1, &other_process);
  if (st.ok()) {
    const int rc = seccomp_load(ctx);
    if (rc != 0) st = absl::InternalError(absl::StrCat("seccomp_load: ", strerror(-rc)));
  }
  seccomp_release(ctx);
  return st;
}

// Landlock's file-system rights of ABI 1, all handled by the rule set, so
// that whatever a rule does not grant is denied.
constexpr uint64_t kLandlockAbi1Rights =
    LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_READ_FILE |
    LANDLOCK_ACCESS_FS_READ_DIR | LANDLOCK_ACCESS_FS_REMOVE_DIR | LANDLOCK_ACCESS_FS_REMOVE_FILE |
    LANDLOCK_ACCESS_FS_MAKE_CHAR | LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG |
    LANDLOCK_ACCESS_FS_MAKE_SOCK | LANDLOCK_ACCESS_FS_MAKE_FIFO | LANDLOCK_ACCESS_FS_MAKE_BLOCK |
    LANDLOCK_ACCESS_FS_MAKE_SYM;
// Linking or renaming across directories (ABI 2) and truncating (ABI 3).
constexpr uint64_t kLandlockReferRight = uint64_t{1} << 13;
constexpr uint64_t kLandlockTruncateRight = uint64_t{1} << 14;

// Grants reading beneath `path` (a directory: its files and listings; a
// file: its content) in `ruleset`. A missing path is NotFound.
absl::Status AllowReading(int ruleset, const std::string& path) {
  const int fd = ::open(path.c_str(), O_PATH | O_CLOEXEC);
  if (fd < 0) {
    return absl::Status(
        errno == ENOENT ? absl::StatusCode::kNotFound : absl::StatusCode::kInternal,
        absl::StrCat("cannot open ", path, " for a Landlock rule: ", strerror(errno)));
  }
  struct stat st = {};
  landlock_path_beneath_attr rule = {};
  rule.parent_fd = fd;
  rule.allowed_access = LANDLOCK_ACCESS_FS_READ_FILE;
  if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    rule.allowed_access |= LANDLOCK_ACCESS_FS_READ_DIR;
  }
  const long rc = ::syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &rule, 0);
  const int error = errno;
  ::close(fd);
  if (rc != 0) {
    return absl::InternalError(absl::StrCat("landlock_add_rule(", path, "): ", strerror(error)));
  }
  return absl::OkStatus();
}

// Landlock: reading kSystemReadable and `readable`, nothing else (see
// ConfineCurrentProcess). Nothing to do on a kernel without Landlock.
absl::Status RestrictFileAccess(const std::vector<std::string>& readable) {
  const int abi = LandlockAbi();
  if (abi < 1) return absl::OkStatus();
  landlock_ruleset_attr attr = {};
  attr.handled_access_fs = kLandlockAbi1Rights;
  if (abi >= 2) attr.handled_access_fs |= kLandlockReferRight;
  if (abi >= 3) attr.handled_access_fs |= kLandlockTruncateRight;
  const long ruleset = ::syscall(SYS_landlock_create_ruleset, &attr, sizeof(attr), 0);
  if (ruleset < 0) {
    return absl::InternalError(absl::StrCat("landlock_create_ruleset: ", strerror(errno)));
  }
  const int fd = static_cast<int>(ruleset);
  absl::Status st;
  for (const char* path : kSystemReadable) {
    if (!st.ok()) break;
    st = AllowReading(fd, path);
    if (absl::IsNotFound(st)) st = absl::OkStatus();  // not on this system
  }
  for (const std::string& path : readable) {
    if (st.ok()) st = AllowReading(fd, path);
  }
  if (st.ok() && ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    st = absl::InternalError(absl::StrCat("PR_SET_NO_NEW_PRIVS: ", strerror(errno)));
  }
  if (st.ok() && ::syscall(SYS_landlock_restrict_self, fd, 0) != 0) {
    st = absl::InternalError(absl::StrCat("landlock_restrict_self: ", strerror(errno)));
  }
  ::close(fd);
  return st;
}

// The process's thread count from /proc/self/status; 0 when unreadable.
int64_t ThreadCount() {
  const int fd = ::open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[4096];
  const ssize_t n = ::read(fd, buf, sizeof(buf) - 1);
  ::close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  const char* line = std::strstr(buf, "\nThreads:");
  return line == nullptr ? 0 : std::strtoll(line + 9, nullptr, 10);
}

}  // namespace

int LandlockAbi() {
  const long abi =
      ::syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
  return abi > 0 ? static_cast<int>(abi) : 0;
}

absl::Status ConfineCurrentProcess(const ChildLimits& limits, int keep_fd) {
  // Landlock and seccomp confine the calling thread and the threads it
  // starts afterwards, not threads that already run.
  if (const int64_t threads = ThreadCount(); threads != 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the process has ", threads,
        " threads (or none could be counted); confinement reaches only threads started after it, "
        "so it must come before any other thread"));
  }
  if (keep_fd > 3) ::close_range(3, static_cast<unsigned>(keep_fd) - 1, 0);
  ::close_range(keep_fd >= 3 ? static_cast<unsigned>(keep_fd) + 1 : 3, ~0U, 0);
  const rlim_t memory = static_cast<rlim_t>(limits.memory_bytes);
  const rlim_t cpu = static_cast<rlim_t>(limits.cpu_seconds);
  const rlim_t files = static_cast<rlim_t>(limits.open_files);
  // The limits come last: seccomp_load allocates the program it builds, and
  // libseccomp 2.5 dereferences an allocation that failed, so under a tight
  // RLIMIT_AS it crashed the helper (SIGSEGV, seen at 20 MiB) instead of
  // confining it. Nothing untrusted runs before this returns, and the filter
  // leaves the process's own limits settable.
  absl::Status st = RestrictFileAccess(limits.readable);
  if (st.ok()) st = InstallFilter();
  if (st.ok()) st = SetLimit(RLIMIT_AS, "RLIMIT_AS", memory, memory);
  if (st.ok()) st = SetLimit(RLIMIT_CPU, "RLIMIT_CPU", cpu, cpu + 1);
  if (st.ok()) st = SetLimit(RLIMIT_NOFILE, "RLIMIT_NOFILE", files, files);
  if (st.ok()) st = SetLimit(RLIMIT_FSIZE, "RLIMIT_FSIZE", 0, 0);
  if (st.ok()) st = SetLimit(RLIMIT_CORE, "RLIMIT_CORE", 0, 0);
  return st;
}

bool WriteAll(int fd, absl::string_view bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace kaizen::sandbox
