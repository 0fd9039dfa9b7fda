// The bookkeeping of the checkpoint metric across epochs: which epoch is the
// best so far (Checkpoint::is_best) and how many epochs early stopping has
// waited for an improvement beyond min_delta. Pure: it reads and writes only
// the ResumeState it is given, so a resumed job continues the same count.
#pragma once

#include <cstdint>

#include "kaizen/v1/finetune_service.pb.h"
#include "server/training/resume_state.h"

namespace kaizen::training {

// Records `value` of the checkpoint metric for epoch `epoch_number`
// (counted from 1) in `state`. `maximise` is true for accuracies, false for
// losses. Returns whether the value is the best so far (the first always
// is); ties are not an improvement.
bool RecordCheckpointMetric(double value, bool maximise, double min_delta, int32_t epoch_number,
                            ResumeState* state);

// Whether early stopping ends training after the epochs recorded in `state`:
// enabled, and `patience` (at least 1) epochs without an improvement.
bool PatienceExhausted(const kaizen::v1::EarlyStopping& early_stopping, const ResumeState& state);

}  // namespace kaizen::training
