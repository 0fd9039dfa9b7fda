// Turns the hyperparameters of a StartFineTune request into the complete set
// a job runs with: zero fields take the strategy's defaults (scaled to the
// dataset size), and every value is checked against its valid range.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "kaizen/v1/finetune_service.pb.h"

namespace kaizen::training {

// Defaults per strategy applied to zero (unset) fields of `requested`; message
// fields with presence (augmentation, validation) are taken exactly as given
// when set. A zero seed becomes a random one. Errors are InvalidArgument
// naming the field, e.g. "hyperparameters.learning_rate is -1; it must be > 0".
absl::StatusOr<kaizen::v1::Hyperparameters> ResolveHyperparameters(
    kaizen::v1::Strategy strategy, const kaizen::v1::Hyperparameters& requested,
    int64_t num_train_examples);

}  // namespace kaizen::training
