// The learning-rate schedule of a job as a pure function of the global step:
// linear warm-up, then constant, step decay or cosine decay. Every parameter
// group is scaled by the same factor, so their ratios (head vs backbone) hold.
#pragma once

#include <cstdint>

#include "kaizen/v1/finetune_service.pb.h"

namespace kaizen::training {

class LrSchedule {
 public:
  // `options` resolved (kind set); `steps_per_epoch` >= 1.
  LrSchedule(const kaizen::v1::ScheduleOptions& options, int64_t steps_per_epoch, int32_t epochs);

  // Factor in (0, 1] of the base learning rate for the step with 0-based
  // global index `step`. Warm-up rises linearly to 1 over
  // warmup_epochs * steps_per_epoch steps (the first step gets 1/warmup_steps).
  double Factor(int64_t step) const;

  int64_t total_steps() const { return total_steps_; }
  int64_t warmup_steps() const { return warmup_steps_; }

 private:
  kaizen::v1::ScheduleOptions options_;
  int64_t steps_per_epoch_;
  int64_t total_steps_;
  int64_t warmup_steps_;
};

}  // namespace kaizen::training
