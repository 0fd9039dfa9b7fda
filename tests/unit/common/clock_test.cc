// The real clock's waits and the fake clock tests drive time with.
#include "server/common/clock.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "absl/time/clock.h"
#include "tests/test_util/fake_clock.h"

namespace kaizen::common {
namespace {

TEST(RealClockTest, ReadsTheWallClock) {
  const absl::Time before = absl::Now();
  const absl::Time now = Clock::Real()->Now();
  EXPECT_LE(before, now);
  EXPECT_LE(now, absl::Now());
}

TEST(RealClockTest, AwaitReturnsAtOnceWhenTheConditionHolds) {
  absl::Mutex mu;
  absl::MutexLock lock(&mu);
  const bool ready = true;
  EXPECT_TRUE(
      Clock::Real()->AwaitWithDeadline(&mu, absl::Condition(&ready), absl::InfiniteFuture()));
}

TEST(RealClockTest, AwaitReturnsFalseOnceTheDeadlinePasses) {
  absl::Mutex mu;
  absl::MutexLock lock(&mu);
  const bool ready = false;
  const absl::Time deadline = absl::Now() + absl::Milliseconds(20);
  EXPECT_FALSE(Clock::Real()->AwaitWithDeadline(&mu, absl::Condition(&ready), deadline));
  EXPECT_GE(absl::Now(), deadline);
}

TEST(RealClockTest, SleepUntilReturnsAtTheDeadline) {
  const absl::Time deadline = absl::Now() + absl::Milliseconds(20);
  Clock::Real()->SleepUntil(deadline);
  EXPECT_GE(absl::Now(), deadline);
}

TEST(FakeClockTest, TimeMovesOnlyWhenAdvanced) {
  test_util::FakeClock clock(absl::FromUnixSeconds(100));
  EXPECT_EQ(clock.Now(), absl::FromUnixSeconds(100));
  clock.Advance(absl::Milliseconds(1500));
  EXPECT_EQ(clock.Now(), absl::FromUnixSeconds(100) + absl::Milliseconds(1500));
}

TEST(FakeClockTest, AWaitEndsWhenAdvancedToItsDeadlineAndNotBefore) {
  test_util::FakeClock clock;
  absl::Mutex mu;
  bool ready = false;
  std::atomic<int> result{-1};
  const absl::Time deadline = clock.Now() + absl::Seconds(10);
  std::thread waiter([&] {
    absl::MutexLock lock(&mu);
    result = clock.AwaitWithDeadline(&mu, absl::Condition(&ready), deadline) ? 1 : 0;
  });
  clock.BlockUntilWaiters(1);
  clock.Advance(absl::Seconds(9));
  // Advance() has made the waiter look at the time again; it still waits.
  EXPECT_EQ(clock.waiters(), 1);
  EXPECT_EQ(result.load(), -1);
  clock.Advance(absl::Seconds(1));
  waiter.join();
  EXPECT_EQ(result.load(), 0);
  EXPECT_EQ(clock.waiters(), 0);
}

TEST(FakeClockTest, AWaitEndsWhenItsConditionBecomesTrueWithoutTimeMoving) {
  test_util::FakeClock clock;
  absl::Mutex mu;
  bool ready = false;
  std::atomic<int> result{-1};
  std::thread waiter([&] {
    absl::MutexLock lock(&mu);
    result = clock.AwaitWithDeadline(&mu, absl::Condition(&ready), absl::InfiniteFuture()) ? 1 : 0;
  });
  clock.BlockUntilWaiters(1);
  {
    absl::MutexLock lock(&mu);
    ready = true;
  }
  waiter.join();
  EXPECT_EQ(result.load(), 1);
}

TEST(FakeClockTest, AWaitWhoseDeadlineHasPassedReturnsAtOnce) {
  test_util::FakeClock clock;
  absl::Mutex mu;
  absl::MutexLock lock(&mu);
  const bool ready = false;
  EXPECT_FALSE(clock.AwaitWithDeadline(&mu, absl::Condition(&ready), clock.Now()));
  EXPECT_EQ(clock.waiters(), 0);
}

TEST(FakeClockTest, SleepUntilWakesWhenAdvancedPastTheDeadline) {
  test_util::FakeClock clock;
  std::atomic<bool> woke{false};
  const absl::Time deadline = clock.Now() + absl::Minutes(5);
  std::thread sleeper([&] {
    clock.SleepUntil(deadline);
    woke = true;
  });
  clock.BlockUntilWaiters(1);
  clock.Advance(absl::Minutes(4));
  EXPECT_FALSE(woke.load());
  clock.Advance(absl::Minutes(2));
  sleeper.join();
  EXPECT_TRUE(woke.load());
  EXPECT_GE(clock.Now(), deadline);
}

}  // namespace
}  // namespace kaizen::common
