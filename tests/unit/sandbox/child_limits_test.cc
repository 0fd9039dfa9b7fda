#include "server/sandbox/child_limits.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <functional>
#include <string>

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

TEST_F(ChildLimitsTest, ReadsStillWork) {
  EXPECT_EQ(InConfinedChild([&] {
              char buf[8];
              const int fd = open(path_.c_str(), O_RDONLY);
              return fd >= 0 && read(fd, buf, 8) == 8 ? 0 : 1;
            }),
            0);
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

TEST_F(ChildLimitsTest, MemoryAndFileLimitsHold) {
  ChildLimits limits;
  limits.memory_bytes = int64_t{512} << 20;
  EXPECT_EQ(InConfinedChild([] { return malloc(size_t{1} << 30) == nullptr ? 0 : 1; }, limits), 0);
  // Inherited descriptors are closed.
  const int fd = open(path_.c_str(), O_RDONLY);
  ASSERT_GE(fd, 3);
  EXPECT_EQ(InConfinedChild([fd] { return fcntl(fd, F_GETFD) < 0 ? 0 : 1; }), 0);
  close(fd);
}

}  // namespace
}  // namespace kaizen::sandbox
