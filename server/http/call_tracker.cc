#include "server/http/call_tracker.h"

#include <utility>

namespace kaizen::http {
namespace {

bool IsZero(int* n) { return *n == 0; }

}  // namespace

struct CallTracker::Token::Counter {
  mutable absl::Mutex mu;
  int live ABSL_GUARDED_BY(mu) = 0;
};

CallTracker::Token& CallTracker::Token::operator=(Token&& other) noexcept {
  if (this != &other) {
    Token dropped(std::move(*this));
    counter_ = std::move(other.counter_);
  }
  return *this;
}

CallTracker::Token::~Token() {
  if (counter_ == nullptr) return;
  absl::MutexLock lock(&counter_->mu);
  --counter_->live;
}

CallTracker::CallTracker() : counter_(std::make_shared<Token::Counter>()) {}

CallTracker::Token CallTracker::Enter() {
  absl::MutexLock lock(&counter_->mu);
  ++counter_->live;
  return Token(counter_);
}

int CallTracker::live() const {
  absl::MutexLock lock(&counter_->mu);
  return counter_->live;
}

bool CallTracker::WaitIdle(absl::Duration timeout) const {
  absl::MutexLock lock(&counter_->mu);
  return counter_->mu.AwaitWithTimeout(absl::Condition(&IsZero, &counter_->live), timeout);
}

}  // namespace kaizen::http
