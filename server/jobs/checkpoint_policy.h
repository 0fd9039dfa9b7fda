// What a job does with each checkpoint it writes as a new version of its
// output model: which metric judges it, whether it becomes the job's best
// version, and which versions are kept afterwards. Pure functions, so that
// the policy is tested apart from the store it prunes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "google/protobuf/map.h"

namespace kaizen::jobs {

// Versions a job keeps when its request leaves keep_checkpoints at 0.
inline constexpr int kDefaultKeepCheckpoints = 3;

struct RetentionPolicy {
  // The newest this many versions stay (StartFineTuneRequest.keep_checkpoints,
  // resolved by RetentionFor).
  int keep_newest = kDefaultKeepCheckpoints;
  // Stays whatever its age; 0 for none.
  int64_t best_version = 0;
};

// The policy of a request's keep_checkpoints (0 or less: the default).
RetentionPolicy RetentionFor(int32_t keep_checkpoints, int64_t best_version);

// The versions to keep out of all `versions` of the output model (any order;
// the newest is the largest): the newest keep_newest, plus the best one.
// Sorted, without duplicates; everything else may be deleted. The newest
// version is always kept while keep_newest >= 1.
std::vector<int64_t> VersionsToKeep(std::vector<int64_t> versions, const RetentionPolicy& policy);

// The metric a checkpoint is judged by, from the metrics of its stored
// version: val_accuracy for a classifier with validation, val_masked_lm_loss
// for a MASKED_LM job with validation, else train_loss (0 when missing).
struct CheckpointMetric {
  std::string name;
  double value = 0;
};
CheckpointMetric CheckpointMetricOf(const google::protobuf::Map<std::string, double>& metrics);

// Whether a new checkpoint becomes the job's best version: the trainer says
// it is the best so far, or the job has none yet.
bool BecomesBestVersion(bool trainer_says_best, int64_t current_best_version);

}  // namespace kaizen::jobs
