// Clock: where code whose behaviour depends on time (batch delays, request
// deadlines, idle timeouts) reads the time and waits for it. Production code
// uses Clock::Real(); tests pass a FakeClock (tests/test_util/fake_clock.h)
// and move time by hand, so that they wait on events instead of sleeping.
// Timestamps that only go into logs and metrics may keep reading absl::Now().
#pragma once

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace kaizen::common {

class Clock {
 public:
  virtual ~Clock() = default;

  virtual absl::Time Now() const = 0;

  // absl::Mutex::AwaitWithDeadline on this clock's time: `mu` is held on
  // entry and on return; it is released until `condition` holds or Now()
  // reaches `deadline`. Returns whether `condition` holds. `condition` is
  // evaluated under `mu` and must not block.
  virtual bool AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& condition,
                                 absl::Time deadline) = 0;

  // Blocks until Now() reaches `deadline`.
  void SleepUntil(absl::Time deadline);

  // The process's wall clock (absl::Now, absl::Mutex's own timed waits).
  // Stateless and never destroyed.
  static Clock* Real();
};

// The wall clock; use Clock::Real() rather than making one.
class RealClock : public Clock {
 public:
  absl::Time Now() const override;
  bool AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& condition,
                         absl::Time deadline) override;
};

}  // namespace kaizen::common
