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

// The ranges of what a caller asked for, before defaults hide a bad value
// (zero always means "the default"); unknown enum values. InvalidArgument
// naming the field.
absl::Status CheckRequestedRanges(const kaizen::v1::Hyperparameters& requested);

// DISTILL's defaults. T = 4 softens a confident teacher enough that the
// ranks of its wrong classes carry signal (Hinton et al. used 2-20; 4 is the
// usual choice on 10-class image tasks), and alpha = 0.7 lets those soft
// targets lead while the labels still correct the teacher's mistakes.
inline constexpr double kDefaultDistillationTemperature = 4.0;
inline constexpr double kDefaultDistillationAlpha = 0.7;

// STRATEGY_DISTILL: `requested` with zero temperature and alpha at their
// defaults. InvalidArgument naming the field for a missing teacher_model
// ("distillation.teacher_model is empty; ..."), a temperature outside
// [1, 100] or an alpha outside (0, 1] ("distillation.alpha is 1.5; it must
// be in (0, 1]"). Other strategies: `requested` when it is empty,
// InvalidArgument when any distillation option is set.
absl::StatusOr<kaizen::v1::DistillationOptions> ResolveDistillation(
    kaizen::v1::Strategy strategy, const kaizen::v1::DistillationOptions& requested);

inline constexpr double kDefaultIncrementalTemperature = 2.0;
inline constexpr double kDefaultIncrementalWeight = 1.0;

// STRATEGY_INCREMENTAL: `requested` with its defaults (exemplars_per_class
// 50, max_exemplars 2000, distillation_weight 1, temperature 2, HERDING, the
// job's `seed`). InvalidArgument naming the field for a negative count, a
// temperature outside [1, 100], a negative or non-finite weight or an unknown
// selection. Other strategies: `requested` when it is empty, InvalidArgument
// when any incremental option is set.
absl::StatusOr<kaizen::v1::IncrementalOptions> ResolveIncremental(
    kaizen::v1::Strategy strategy, const kaizen::v1::IncrementalOptions& requested, uint64_t seed);

}  // namespace kaizen::training
