#include "server/training/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace kaizen::training {

LrSchedule::LrSchedule(const kaizen::v1::ScheduleOptions& options, int64_t steps_per_epoch,
                       int32_t epochs)
    : options_(options),
      steps_per_epoch_(std::max<int64_t>(1, steps_per_epoch)),
      total_steps_(steps_per_epoch_ * std::max<int32_t>(1, epochs)),
      warmup_steps_(std::min<int64_t>(
          total_steps_ - 1,
          static_cast<int64_t>(
              std::llround(options.warmup_epochs() * static_cast<double>(steps_per_epoch_))))) {
  warmup_steps_ = std::max<int64_t>(0, warmup_steps_);
}

double LrSchedule::Factor(int64_t step) const {
  if (step < warmup_steps_) {
    return static_cast<double>(step + 1) / static_cast<double>(warmup_steps_);
  }
  switch (options_.kind()) {
    case kaizen::v1::SCHEDULE_STEP: {
      const int64_t every = std::max<int32_t>(1, options_.step_epochs());
      const int64_t epoch = step / steps_per_epoch_;
      return std::pow(options_.step_gamma(), static_cast<double>(epoch / every));
    }
    case kaizen::v1::SCHEDULE_COSINE: {
      const double span = static_cast<double>(std::max<int64_t>(1, total_steps_ - warmup_steps_));
      const double progress =
          std::clamp(static_cast<double>(step - warmup_steps_) / span, 0.0, 1.0);
      const double floor = options_.min_lr_ratio();
      return floor + (1.0 - floor) * 0.5 * (1.0 + std::cos(M_PI * progress));
    }
    case kaizen::v1::SCHEDULE_CONSTANT:
    default:
      return 1.0;
  }
}

}  // namespace kaizen::training
