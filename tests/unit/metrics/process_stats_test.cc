// ReadProcessStats against what this test process does to itself.
#include "server/metrics/process_stats.h"

#include <fcntl.h>
#include <unistd.h>

#include <ctime>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace kaizen::metrics {
namespace {

double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

TEST(ProcessStatsTest, SeesThreadsAndDescriptorsComeAndGo) {
  absl::StatusOr<ProcessStats> before = ReadProcessStats();
  ASSERT_TRUE(before.ok()) << before.status();
  absl::Notification stop;
  std::thread t([&] { stop.WaitForNotification(); });
  const int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  absl::StatusOr<ProcessStats> during = ReadProcessStats();
  stop.Notify();
  t.join();
  close(fd);
  absl::StatusOr<ProcessStats> after = ReadProcessStats();
  ASSERT_TRUE(during.ok() && after.ok());
  EXPECT_EQ(during->threads, before->threads + 1);
  EXPECT_EQ(during->open_fds, before->open_fds + 1);
  EXPECT_EQ(after->threads, before->threads);
  EXPECT_EQ(after->open_fds, before->open_fds);
  EXPECT_EQ(after->start_time_seconds, before->start_time_seconds);
  EXPECT_GT(before->max_fds, before->open_fds);
}

TEST(ProcessStatsTest, CpuTimeAndMemoryGrowWithWork) {
  absl::StatusOr<ProcessStats> before = ReadProcessStats();
  ASSERT_TRUE(before.ok()) << before.status();
  // 64 MiB touched page by page shows in the resident set. Through a
  // volatile pointer: a block nothing reads may be dropped (clang does).
  std::vector<char> block(64 << 20);
  volatile char* touch = block.data();
  for (size_t i = 0; i < block.size(); i += 4096) touch[i] = 1;
  // 300 ms of this thread's own CPU time, however busy the machine is.
  const double cpu_start = ThreadCpuSeconds();
  volatile uint64_t sink = 0;
  while (ThreadCpuSeconds() - cpu_start < 0.3) sink = sink + 1;
  absl::StatusOr<ProcessStats> after = ReadProcessStats();
  ASSERT_TRUE(after.ok());
  EXPECT_GE(after->resident_bytes - before->resident_bytes, 60 << 20);
  EXPECT_GE(after->virtual_bytes, after->resident_bytes);
  // Counted in clock ticks (10 ms).
  EXPECT_GT(after->cpu_seconds - before->cpu_seconds, 0.25);
  EXPECT_LE(after->start_time_seconds, absl::ToUnixSeconds(absl::Now()) + 1);
}

}  // namespace
}  // namespace kaizen::metrics
