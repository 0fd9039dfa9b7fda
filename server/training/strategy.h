// Which fine-tuning strategies a job can run: the one place that says so, used
// by StartFineTune (JobManager::Submit), ResolveHyperparameters and Train().
#pragma once

#include "absl/status/status.h"
#include "kaizen/v1/finetune_service.pb.h"

namespace kaizen::training {

// InvalidArgument when `strategy` is STRATEGY_UNSPECIFIED or not a value of
// the enum ("strategy is unspecified; choose FEATURE_EXTRACTION, ...").
absl::Status CheckStrategySpecified(kaizen::v1::Strategy strategy);

// CheckStrategySpecified, then Unimplemented for a strategy that is defined
// but not trained by this server, naming it (none today: every strategy of
// the enum trains).
absl::Status CheckStrategyAvailable(kaizen::v1::Strategy strategy);

}  // namespace kaizen::training
