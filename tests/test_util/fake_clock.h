// A Clock (server/common/clock.h) whose time moves only when a test calls
// Advance(), which also wakes the threads whose waits it ends. Waits whose
// condition becomes true end as they would on the real clock.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/common/clock.h"

namespace kaizen::test_util {

class FakeClock : public common::Clock {
 public:
  // Starts at `start` (any fixed time: nothing reads the wall clock).
  explicit FakeClock(absl::Time start = absl::FromUnixSeconds(1'800'000'000));

  absl::Time Now() const override;
  bool AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& condition,
                         absl::Time deadline) override;

  // Moves time forward by `d` and has every waiter look at it again: those
  // whose deadline it reaches return. A mutex someone waits on must outlive
  // the Advance() that wakes them (tests advance from the thread that owns
  // what they wait in).
  void Advance(absl::Duration d);

  // Blocks until at least `n` threads wait on this clock, so that a test
  // advances time only once the waits it means to end have begun.
  void BlockUntilWaiters(int n) const;
  // Threads waiting on this clock now.
  int waiters() const;

 private:
  // Now(), in nanoseconds since the Unix epoch: read without a lock inside
  // the conditions of waiters.
  std::atomic<int64_t> now_ns_;
  mutable absl::Mutex mu_;
  // The mutexes waited on, with how many waits on each.
  std::map<absl::Mutex*, int> waiting_on_ ABSL_GUARDED_BY(mu_);
  int waiters_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace kaizen::test_util
