#include "server/common/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>

#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/notification.h"

namespace kaizen::common {
namespace {

TEST(ThreadPool, RunsQueuedWorkBeforeItIsDestroyed) {
  std::atomic<int> ran{0};
  {
    ThreadPool pool(2);
    for (int i = 0; i < 100; ++i) pool.Schedule([&ran] { ++ran; });
  }
  EXPECT_EQ(ran.load(), 100);
}

TEST(ThreadPool, RunsAsManyPiecesOfWorkAtOnceAsItHasThreads) {
  // Each piece waits for all the others to start: with fewer threads than
  // pieces this would never finish.
  constexpr int kThreads = 4;
  ThreadPool pool(kThreads);
  absl::BlockingCounter started(kThreads);
  absl::Notification all_started;
  absl::BlockingCounter finished(kThreads);
  for (int i = 0; i < kThreads; ++i) {
    pool.Schedule([&] {
      started.DecrementCount();
      all_started.WaitForNotification();
      finished.DecrementCount();
    });
  }
  started.Wait();
  all_started.Notify();
  finished.Wait();
}

}  // namespace
}  // namespace kaizen::common
