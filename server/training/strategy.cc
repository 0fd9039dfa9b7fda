#include "server/training/strategy.h"

#include "absl/strings/str_cat.h"

namespace kaizen::training {

absl::Status CheckStrategySpecified(kaizen::v1::Strategy strategy) {
  if (strategy == kaizen::v1::STRATEGY_UNSPECIFIED) {
    return absl::InvalidArgumentError(
        "strategy is unspecified; choose FEATURE_EXTRACTION, FINE_TUNE, FULL, SCRATCH, "
        "INCREMENTAL or DISTILL");
  }
  if (!kaizen::v1::Strategy_IsValid(strategy)) {
    return absl::InvalidArgumentError(
        absl::StrCat("strategy is ", static_cast<int>(strategy),
                     ", not a known strategy; choose FEATURE_EXTRACTION, FINE_TUNE, FULL, "
                     "SCRATCH, INCREMENTAL, DISTILL or MASKED_LM"));
  }
  return absl::OkStatus();
}

absl::Status CheckStrategyAvailable(kaizen::v1::Strategy strategy) {
  if (absl::Status st = CheckStrategySpecified(strategy); !st.ok()) return st;
  switch (strategy) {
    case kaizen::v1::STRATEGY_FEATURE_EXTRACTION:
    case kaizen::v1::STRATEGY_FINE_TUNE:
    case kaizen::v1::STRATEGY_FULL:
    case kaizen::v1::STRATEGY_SCRATCH:
    case kaizen::v1::STRATEGY_DISTILL:
    case kaizen::v1::STRATEGY_INCREMENTAL:
      return absl::OkStatus();
    case kaizen::v1::STRATEGY_MASKED_LM:
      return absl::InvalidArgumentError(
          "STRATEGY_MASKED_LM pretrains a text encoder and needs a text dataset "
          "(DATASET_FORMAT_TEXT_*)");
    default:
      return absl::UnimplementedError(absl::StrCat("strategy ", kaizen::v1::Strategy_Name(strategy),
                                                   " is not available on this server"));
  }
}

}  // namespace kaizen::training
