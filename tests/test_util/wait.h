// Waiting for a condition that another thread or process makes true.
#pragma once

#include <functional>

#include "absl/time/time.h"

namespace kaizen::test_util {

// Checks `done` every 10 ms until it holds (true) or `limit` has passed
// (false). The limit is a bound for a hung test, not a measurement: pick one
// far beyond what the condition needs on a loaded machine.
bool WaitUntil(const std::function<bool()>& done, absl::Duration limit = absl::Seconds(60));

}  // namespace kaizen::test_util
