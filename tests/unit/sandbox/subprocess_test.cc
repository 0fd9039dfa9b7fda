#include "server/sandbox/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kaizen::sandbox {
namespace {

using ::testing::HasSubstr;

SubprocessOptions Shell(const std::string& script) {
  SubprocessOptions o;
  o.binary = "/bin/sh";
  o.args = {"-c", script};
  o.timeout = absl::Seconds(30);
  return o;
}

TEST(SubprocessTest, PassesInputAndCollectsOutputAndExitCode) {
  SubprocessOptions o = Shell("cat; echo oops >&2; exit 3");
  o.input = std::string(1 << 20, 'x');  // larger than a pipe buffer
  absl::StatusOr<SubprocessResult> r = RunSubprocess(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_EQ(r->term_signal, 0);
  EXPECT_EQ(r->stdout_bytes, o.input);
  EXPECT_EQ(r->stderr_bytes, "oops\n");
  EXPECT_EQ(DescribeEnd(*r), "exited with code 3");
}

TEST(SubprocessTest, AStartedProcessRunsInTheBackgroundWithItsStderrInAFile) {
  char dir_template[] = "/tmp/kaizen-start-XXXXXX";
  const std::string dir = mkdtemp(dir_template);
  const std::string log = dir + "/child.log";
  // Its own process group, nothing blocked, stdin empty, only its env.
  absl::StatusOr<pid_t> pid = StartProcess(
      "/bin/sh", {"-c", "read x; echo \"[$x][$ONLY][$(cut -d' ' -f5 /proc/$$/stat)]\" >&2; exit 3"},
      {"ONLY=this", "PATH=/usr/bin:/bin"}, log);
  ASSERT_TRUE(pid.ok()) << pid.status();
  int status = 0;
  ASSERT_EQ(waitpid(*pid, &status, 0), *pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 3);
  std::string text;
  FILE* f = fopen(log.c_str(), "r");
  ASSERT_NE(f, nullptr);
  char buf[256];
  while (fgets(buf, sizeof(buf), f) != nullptr) text += buf;
  fclose(f);
  EXPECT_EQ(text, absl::StrCat("[][this][", *pid, "]\n"));

  absl::StatusOr<pid_t> missing = StartProcess(dir + "/no-such-binary", {}, {}, log);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(missing.status().message(), HasSubstr("no-such-binary"));
  unlink(log.c_str());
  rmdir(dir.c_str());
}

TEST(SubprocessTest, PassesOnlyTheGivenEnvironment) {
  setenv("KAIZEN_SECRET_FOR_TEST", "token", 1);
  absl::Cleanup unset = [] { unsetenv("KAIZEN_SECRET_FOR_TEST"); };
  SubprocessOptions o = Shell("echo \"[$KAIZEN_SECRET_FOR_TEST][$ONLY]\"");
  o.env = {"ONLY=this"};
  absl::StatusOr<SubprocessResult> r = RunSubprocess(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stdout_bytes, "[][this]\n");
}

TEST(SubprocessTest, KillsAChildThatOverstaysItsDeadline) {
  SubprocessOptions o = Shell("sleep 30 & sleep 30");
  o.timeout = absl::Milliseconds(300);
  const absl::Time start = absl::Now();
  absl::StatusOr<SubprocessResult> r = RunSubprocess(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->timed_out);
  EXPECT_EQ(r->term_signal, SIGKILL);
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_THAT(DescribeEnd(*r), HasSubstr("timed out"));
}

TEST(SubprocessTest, ReportsTheSignalThatEndedTheChild) {
  absl::StatusOr<SubprocessResult> r = RunSubprocess(Shell("kill -SEGV $$"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->term_signal, SIGSEGV);
  EXPECT_THAT(DescribeEnd(*r), HasSubstr("SIGSEGV"));
}

TEST(SubprocessTest, StopsAChildThatWritesTooMuch) {
  SubprocessOptions o = Shell("yes");
  o.max_stdout_bytes = 1 << 20;
  absl::StatusOr<SubprocessResult> r = RunSubprocess(o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->output_too_large);
  EXPECT_LE(r->stdout_bytes.size(), o.max_stdout_bytes);
}

TEST(SubprocessTest, MissingBinaryIsAnError) {
  SubprocessOptions o;
  o.binary = "/nonexistent/kaizen-helper";
  absl::StatusOr<SubprocessResult> r = RunSubprocess(o);
  // posix_spawn reports exec failures either way, depending on the libc.
  if (r.ok()) {
    EXPECT_EQ(r->exit_code, 127);
  } else {
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal);
  }
}

TEST(SubprocessTest, HelpersAreFoundBesideTheRunningExecutable) {
  // The test binary sits in the build folder, beside the helpers.
  const std::string inspector = BesideThisExecutable("kaizen-model-inspector");
  EXPECT_EQ(inspector, std::string(KAIZEN_BINARY_DIR) + "/kaizen-model-inspector");
  EXPECT_EQ(::access(inspector.c_str(), X_OK), 0) << inspector;
  EXPECT_EQ(::access(BesideThisExecutable("kaizen-tokenizer-trainer").c_str(), X_OK), 0);
}

// A process of the same user, as a helper is, reads another's environment
// only while that one is dumpable.
TEST(SubprocessTest, AnUndumpableProcessHidesItsEnvironmentFromItsOwnUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to drop both processes to one other user";
  constexpr uid_t kNobody = 65534;
  for (const bool undumpable : {false, true}) {
    int ready[2];
    ASSERT_EQ(::pipe(ready), 0);
    const pid_t target = ::fork();
    if (target == 0) {
      if (::setresgid(kNobody, kNobody, kNobody) != 0 ||
          ::setresuid(kNobody, kNobody, kNobody) != 0)
        _exit(2);
      // setuid makes a process undumpable; PR_SET_DUMPABLE 1 undoes that
      // for the control case.
      ::prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
      if (undumpable && !MakeUndumpable().ok()) _exit(3);
      (void)!::write(ready[1], "r", 1);
      ::pause();
      _exit(0);
    }
    char byte;
    ASSERT_EQ(::read(ready[0], &byte, 1), 1);
    const pid_t reader = ::fork();
    if (reader == 0) {
      if (::setresgid(kNobody, kNobody, kNobody) != 0 ||
          ::setresuid(kNobody, kNobody, kNobody) != 0)
        _exit(2);
      const int fd = ::open(absl::StrCat("/proc/", target, "/environ").c_str(), O_RDONLY);
      _exit(fd >= 0 ? 0 : (errno == EACCES ? 1 : 4));
    }
    int status = 0;
    ::waitpid(reader, &status, 0);
    ::kill(target, SIGKILL);
    ::waitpid(target, nullptr, 0);
    ::close(ready[0]);
    ::close(ready[1]);
    ASSERT_TRUE(WIFEXITED(status)) << status;
    EXPECT_EQ(WEXITSTATUS(status), undumpable ? 1 : 0) << (undumpable ? "undumpable" : "dumpable");
  }
}

}  // namespace
}  // namespace kaizen::sandbox
