#include "server/http/call_tracker.h"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <optional>
#include <thread>
#include <utility>

#include "absl/time/clock.h"

namespace kaizen::http {
namespace {

TEST(CallTrackerTest, ACallCountsUntilItsTokenIsDestroyed) {
  CallTracker tracker;
  EXPECT_EQ(tracker.live(), 0);
  std::optional<CallTracker::Token> a = tracker.Enter();
  {
    CallTracker::Token b = tracker.Enter();
    EXPECT_EQ(tracker.live(), 2);
  }
  EXPECT_EQ(tracker.live(), 1);
  // Moving a token moves the count with it: a moved-from token counts nothing.
  CallTracker::Token moved(std::move(*a));
  a.reset();
  EXPECT_EQ(tracker.live(), 1);
  // Assigning over a token that counts releases it.
  CallTracker::Token other = tracker.Enter();
  EXPECT_EQ(tracker.live(), 2);
  other = std::move(moved);
  EXPECT_EQ(tracker.live(), 1);
  other = CallTracker::Token();
  EXPECT_EQ(tracker.live(), 0);
}

TEST(CallTrackerTest, WaitIdleReturnsOnlyOnceTheLastCallIsGone) {
  CallTracker tracker;
  EXPECT_TRUE(tracker.WaitIdle(absl::ZeroDuration()));
  auto token = std::make_unique<CallTracker::Token>(tracker.Enter());
  EXPECT_FALSE(tracker.WaitIdle(absl::Milliseconds(20)));

  std::atomic<bool> released{false};
  std::thread call([&] {
    absl::SleepFor(absl::Milliseconds(100));
    released = true;
    token.reset();  // the call's object goes, on another thread
  });
  EXPECT_TRUE(tracker.WaitIdle(absl::Seconds(30)));
  EXPECT_TRUE(released.load());
  call.join();
}

TEST(CallTrackerTest, ATokenMayOutliveItsTracker) {
  std::optional<CallTracker::Token> token;
  {
    CallTracker tracker;
    token = tracker.Enter();
  }
  token.reset();  // no tracker to count on: nothing to touch but the shared count
  SUCCEED();
}

}  // namespace
}  // namespace kaizen::http
