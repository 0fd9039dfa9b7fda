#include "server/sandbox/child_limits.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/ipc.h>
#include <sys/resource.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::sandbox {
namespace {

// Runs `probe` in a forked child after ConfineCurrentProcess and returns its
// exit code (the probe's return value), or 100 + signal.
int InConfinedChild(const std::function<int()>& probe, ChildLimits limits = {}) {
  const pid_t pid = fork();
  if (pid == 0) {
    if (!ConfineCurrentProcess(limits).ok()) _exit(99);
    _exit(probe());
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
}

class ChildLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.path() + "/catalogue.db";
    const int fd = open(path_.c_str(), O_WRONLY | O_CREAT, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, "precious", 8), 8);
    close(fd);
  }
  test_util::TempDir dir_;
  std::string path_;
};

// Reading a file: 0 when it reads, errno when open fails.
int ReadError(const std::string& path) {
  char buf[8];
  const int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) return errno;
  const ssize_t n = read(fd, buf, sizeof(buf));
  close(fd);
  return n >= 0 ? 0 : 200;
}

TEST_F(ChildLimitsTest, ReadsStillWork) {
  ChildLimits limits;
  limits.readable = {path_};
  EXPECT_EQ(InConfinedChild([&] { return ReadError(path_); }, limits), 0);
  // The system's files stay readable.
  EXPECT_EQ(InConfinedChild([&] { return ReadError("/etc/ld.so.cache"); }), 0);
  EXPECT_EQ(InConfinedChild([&] { return ReadError("/proc/self/status"); }), 0);
}

// Under Landlock the helper reads the system's files and what it was given,
// nothing else: not the data directory beside its input, not /etc's other
// files (TLS keys, tokens), not its parent's /proc entries, and it cannot
// list what it may not read.
TEST_F(ChildLimitsTest, LandlockLimitsReadsToTheSystemAndTheGivenPaths) {
  if (LandlockAbi() < 1) {
    GTEST_SKIP() << "this kernel has no Landlock; ConfineCurrentProcess leaves reads open";
  }
  const std::string other = dir_.path() + "/tls.key";
  {
    const int fd = open(other.c_str(), O_WRONLY | O_CREAT, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, "secret", 6), 6);
    close(fd);
  }
  ChildLimits limits;
  limits.readable = {path_};
  EXPECT_EQ(InConfinedChild([&] { return ReadError(other); }, limits), EACCES);
  EXPECT_EQ(InConfinedChild([&] { return ReadError(path_); }, limits), 0);
  EXPECT_EQ(InConfinedChild([&] { return ReadError(path_); }), EACCES) << "not given";
  EXPECT_EQ(InConfinedChild([&] { return ReadError("/etc/passwd"); }), EACCES);
  const std::string parent = "/proc/" + std::to_string(getpid()) + "/cmdline";
  EXPECT_EQ(InConfinedChild([&] { return ReadError(parent); }), EACCES);
  EXPECT_EQ(InConfinedChild(
                [&] {
                  const int fd = open(dir_.path().c_str(), O_RDONLY | O_DIRECTORY);
                  return fd < 0 ? errno : 0;
                },
                limits),
            EACCES);
  // A directory given: everything beneath it.
  limits.readable = {dir_.path()};
  EXPECT_EQ(InConfinedChild([&] { return ReadError(other); }, limits), 0);
  // A path that does not exist cannot be given: the helper fails closed.
  limits.readable = {dir_.path() + "/missing"};
  EXPECT_EQ(InConfinedChild([] { return 0; }, limits), 99);
}

TEST_F(ChildLimitsTest, WritesRemovalsAndRenamesAreRefused) {
  EXPECT_EQ(
      InConfinedChild([&] { return open(path_.c_str(), O_WRONLY) < 0 && errno == EACCES ? 0 : 1; }),
      0);
  EXPECT_EQ(InConfinedChild([&] { return open(path_.c_str(), O_RDWR) < 0 ? 0 : 1; }), 0);
  EXPECT_EQ(InConfinedChild([&] {
              const std::string fresh = path_ + ".new";
              return open(fresh.c_str(), O_RDONLY | O_CREAT, 0644) < 0 ? 0 : 1;
            }),
            0);
  EXPECT_EQ(InConfinedChild([&] { return unlink(path_.c_str()) != 0 && errno == EPERM ? 0 : 1; }),
            0);
  EXPECT_EQ(InConfinedChild([&] {
              const std::string to = path_ + ".moved";
              return rename(path_.c_str(), to.c_str()) != 0 ? 0 : 1;
            }),
            0);
  std::string content(8, '\0');
  const int fd = open(path_.c_str(), O_RDONLY);
  ASSERT_EQ(read(fd, content.data(), 8), 8);
  close(fd);
  EXPECT_EQ(content, "precious");
}

TEST_F(ChildLimitsTest, NoSocketsExecOrSignalsToOthers) {
  EXPECT_EQ(InConfinedChild([] { return socket(AF_INET, SOCK_STREAM, 0) < 0 ? 0 : 1; }), 0);
  EXPECT_EQ(InConfinedChild([] {
              char* const argv[] = {const_cast<char*>("/bin/true"), nullptr};
              execv("/bin/true", argv);
              return errno == EPERM ? 0 : 1;
            }),
            0);
  EXPECT_EQ(InConfinedChild([] { return kill(getppid(), 0) != 0 && errno == EPERM ? 0 : 1; }), 0);
  // abort() still works: the child may signal itself.
  EXPECT_EQ(InConfinedChild([]() -> int { abort(); }), 100 + SIGABRT);
}

// No process outlives the child or reaches its parent: no fork by clone,
// no new session, no IPC object, no change to the parent's limits or
// priority, no signal-driven I/O aimed at it; threads still start.
TEST_F(ChildLimitsTest, NoNewProcessesSessionsOrIpcAndNothingAimedAtTheParent) {
  const auto refused = [](long rc) { return rc < 0 && (errno == EPERM || errno == EACCES); };
  EXPECT_EQ(InConfinedChild([&] {
              const long pid = syscall(SYS_clone, SIGCHLD, nullptr, nullptr, nullptr, nullptr);
              if (pid == 0) _exit(0);
              return refused(pid) ? 0 : 1;
            }),
            0);
  EXPECT_EQ(InConfinedChild([&] { return refused(setsid()) ? 0 : 1; }), 0);
  EXPECT_EQ(InConfinedChild([&] { return refused(setpgid(0, 0)) ? 0 : 1; }), 0);
  EXPECT_EQ(
      InConfinedChild([&] { return refused(shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600)) ? 0 : 1; }),
      0);
  EXPECT_EQ(InConfinedChild([&] {
              const struct rlimit tiny = {7, 7};
              return refused(prlimit(getppid(), RLIMIT_NOFILE, &tiny, nullptr)) ? 0 : 1;
            }),
            0);
  EXPECT_EQ(InConfinedChild([&] {
              return refused(setpriority(PRIO_PROCESS, static_cast<id_t>(getppid()), 19)) ? 0 : 1;
            }),
            0);
  EXPECT_EQ(InConfinedChild([&] { return refused(fcntl(2, F_SETOWN, getppid())) ? 0 : 1; }), 0);
  EXPECT_EQ(InConfinedChild([&] { return refused(fcntl(2, F_SETSIG, SIGKILL)) ? 0 : 1; }), 0);
  // fchmodat2 (452), which older libseccomp releases do not know by name.
  const std::string file = path_;
  EXPECT_EQ(InConfinedChild(
                [&] { return refused(syscall(452, AT_FDCWD, file.c_str(), 0777, 0)) ? 0 : 1; }),
            0);
  // This process's own limits still change; threads still start.
  EXPECT_EQ(InConfinedChild([] {
              struct rlimit l;
              getrlimit(RLIMIT_NOFILE, &l);
              if (setrlimit(RLIMIT_NOFILE, &l) != 0) return 1;
              int ran = 0;
              std::thread t([&] { ran = 1; });
              t.join();
              return ran == 1 ? 0 : 2;
            }),
            0);
}

// A process that already runs a second thread is not confined: the filter
// and the rule set would not reach that thread.
TEST_F(ChildLimitsTest, AProcessWithASecondThreadIsRefused) {
  const pid_t pid = fork();
  if (pid == 0) {
    std::thread([] { pause(); }).detach();
    while (true) {
      // Wait until the thread shows in /proc/self/status.
      char buf[4096] = {};
      const int fd = open("/proc/self/status", O_RDONLY);
      const ssize_t n = read(fd, buf, sizeof(buf) - 1);
      close(fd);
      if (n > 0 && strstr(buf, "\nThreads:\t2") != nullptr) break;
    }
    const absl::Status st = ConfineCurrentProcess({});
    _exit(absl::IsFailedPrecondition(st) && st.message().find("has 2 threads") != std::string::npos
              ? 0
              : 1);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST_F(ChildLimitsTest, MemoryAndFileLimitsHold) {
  ChildLimits limits;
  limits.memory_bytes = int64_t{512} << 20;
  // The pointer is stored through a volatile: a malloc whose result is only
  // compared with null may be assumed to succeed, and then never happens
  // (clang drops it at -O3).
  EXPECT_EQ(InConfinedChild(
                [] {
                  void* volatile p = malloc(size_t{1} << 30);
                  return p == nullptr ? 0 : 1;
                },
                limits),
            0);
  // Inherited descriptors are closed.
  const int fd = open(path_.c_str(), O_RDONLY);
  ASSERT_GE(fd, 3);
  EXPECT_EQ(InConfinedChild([fd] { return fcntl(fd, F_GETFD) < 0 ? 0 : 1; }), 0);
  close(fd);
}

// A helper's answer larger than a pipe holds arrives whole once the reader
// drains it; a closed descriptor is a failure.
TEST(WriteAllTest, WritesEverythingThroughAPipeAndFailsOnAClosedOne) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const std::string answer(1 << 20, 'k');
  std::string read_back;
  std::thread reader([&] {
    char buf[4096];
    for (ssize_t n; (n = read(fds[0], buf, sizeof(buf))) > 0;) {
      read_back.append(buf, static_cast<size_t>(n));
    }
  });
  EXPECT_TRUE(WriteAll(fds[1], answer));
  close(fds[1]);
  reader.join();
  close(fds[0]);
  EXPECT_EQ(read_back, answer);
  EXPECT_FALSE(WriteAll(fds[1], "late"));
}

}  // namespace
}  // namespace kaizen::sandbox
