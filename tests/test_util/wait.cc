#include "tests/test_util/wait.h"

#include "absl/time/clock.h"

namespace kaizen::test_util {

bool WaitUntil(const std::function<bool()>& done, absl::Duration limit) {
  const absl::Time end = absl::Now() + limit;
  while (!done()) {
    if (absl::Now() > end) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

}  // namespace kaizen::test_util
