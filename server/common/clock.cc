#include "server/common/clock.h"

#include "absl/time/clock.h"

namespace kaizen::common {

void Clock::SleepUntil(absl::Time deadline) {
  absl::Mutex mu;
  absl::MutexLock lock(&mu);
  const bool never = false;
  AwaitWithDeadline(&mu, absl::Condition(&never), deadline);
}

Clock* Clock::Real() {
  static RealClock* const clock = new RealClock();
  return clock;
}

absl::Time RealClock::Now() const { return absl::Now(); }

bool RealClock::AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& condition,
                                  absl::Time deadline) {
  return mu->AwaitWithDeadline(condition, deadline);
}

}  // namespace kaizen::common
