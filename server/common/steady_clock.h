// A clock that no step of the wall clock moves, for leases and their
// renewals. Linux's boot-time clock also counts time the machine itself
// spent suspended; steady_clock elsewhere. (Neither counts a pause of a
// virtual machine by its host.)
#pragma once

#include <time.h>

#include <chrono>

#include "absl/time/time.h"

namespace kaizen::common {

inline absl::Duration SteadyNow() {
#ifdef CLOCK_BOOTTIME
  timespec now;
  if (clock_gettime(CLOCK_BOOTTIME, &now) == 0) return absl::DurationFromTimespec(now);
#endif
  return absl::FromChrono(std::chrono::steady_clock::now().time_since_epoch());
}

}  // namespace kaizen::common
