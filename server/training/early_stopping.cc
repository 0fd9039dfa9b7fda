#include "server/training/early_stopping.h"

#include <algorithm>

namespace kaizen::training {

bool RecordCheckpointMetric(double value, bool maximise, double min_delta, int32_t epoch_number,
                            ResumeState* state) {
  const bool is_best =
      !state->has_best || (maximise ? value > state->best_metric : value < state->best_metric);
  // Improvement for patience is measured against the last value that beat
  // the reference by min_delta, not against the best: small steps up do not
  // reset the count.
  const bool improved =
      !state->has_best || (maximise ? value > state->patience_reference + min_delta
                                    : value < state->patience_reference - min_delta);
  if (is_best) {
    state->best_metric = value;
    state->best_epoch = epoch_number;
  }
  if (improved) {
    state->patience_reference = value;
    state->epochs_without_improvement = 0;
  } else {
    ++state->epochs_without_improvement;
  }
  state->has_best = true;
  return is_best;
}

bool PatienceExhausted(const kaizen::v1::EarlyStopping& early_stopping, const ResumeState& state) {
  return early_stopping.enabled() &&
         state.epochs_without_improvement >= std::max(1, early_stopping.patience());
}

}  // namespace kaizen::training
