// Facts about a fine-tuning job's state that the server and the client
// share. Torch-free, in kaizen_common, so kaizenctl links it too.
#pragma once

#include "kaizen/v1/finetune_service.pb.h"

namespace kaizen::common {

// True for SUCCEEDED, FAILED and CANCELLED: the job has ended and its state
// never changes again (a PAUSED job can still resume).
bool IsTerminal(kaizen::v1::JobState state);

}  // namespace kaizen::common
