#include "server/common/job_state.h"

namespace kaizen::common {

bool IsTerminal(kaizen::v1::JobState state) {
  return state == kaizen::v1::JOB_STATE_SUCCEEDED || state == kaizen::v1::JOB_STATE_FAILED ||
         state == kaizen::v1::JOB_STATE_CANCELLED;
}

}  // namespace kaizen::common
