#include "tests/test_util/fake_clock.h"

#include <vector>

namespace kaizen::test_util {

FakeClock::FakeClock(absl::Time start) : now_ns_(absl::ToUnixNanos(start)) {}

absl::Time FakeClock::Now() const { return absl::FromUnixNanos(now_ns_.load()); }

bool FakeClock::AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& condition,
                                  absl::Time deadline) {
  struct Wait {
    const FakeClock* clock;
    const absl::Condition* condition;
    absl::Time deadline;
  };
  Wait wait{this, &condition, deadline};
  // Registered while `mu` is held: an Advance() that misses this wait has
  // already moved the time the condition below reads.
  {
    absl::MutexLock lock(&mu_);
    ++waiting_on_[mu];
    ++waiters_;
  }
  mu->Await(absl::Condition(
      +[](Wait* w) { return w->condition->Eval() || w->clock->Now() >= w->deadline; }, &wait));
  {
    absl::MutexLock lock(&mu_);
    if (--waiting_on_[mu] == 0) waiting_on_.erase(mu);
    --waiters_;
  }
  return condition.Eval();
}

void FakeClock::Advance(absl::Duration d) {
  now_ns_ += absl::ToInt64Nanoseconds(d);
  std::vector<absl::Mutex*> mutexes;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [mu, count] : waiting_on_) mutexes.push_back(mu);
  }
  // Releasing a mutex makes absl evaluate the conditions waited on under it,
  // which read the new time. Never under mu_: waiters take mu_ inside theirs.
  for (absl::Mutex* mu : mutexes) {
    mu->Lock();
    mu->Unlock();
  }
}

void FakeClock::BlockUntilWaiters(int n) const {
  absl::MutexLock lock(&mu_);
  auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return waiters_ >= n; };
  mu_.Await(absl::Condition(&enough));
}

int FakeClock::waiters() const {
  absl::MutexLock lock(&mu_);
  return waiters_;
}

}  // namespace kaizen::test_util
