#include "server/jobs/checkpoint_policy.h"

#include <algorithm>

namespace kaizen::jobs {

RetentionPolicy RetentionFor(int32_t keep_checkpoints, int64_t best_version) {
  RetentionPolicy policy;
  policy.keep_newest = keep_checkpoints > 0 ? keep_checkpoints : kDefaultKeepCheckpoints;
  policy.best_version = best_version;
  return policy;
}

std::vector<int64_t> VersionsToKeep(std::vector<int64_t> versions, const RetentionPolicy& policy) {
  std::sort(versions.begin(), versions.end());
  versions.erase(std::unique(versions.begin(), versions.end()), versions.end());
  const size_t keep = static_cast<size_t>(std::max(0, policy.keep_newest));
  if (versions.size() > keep) versions.erase(versions.begin(), versions.end() - keep);
  if (policy.best_version > 0 &&
      !std::binary_search(versions.begin(), versions.end(), policy.best_version)) {
    versions.insert(std::lower_bound(versions.begin(), versions.end(), policy.best_version),
                    policy.best_version);
  }
  return versions;
}

CheckpointMetric CheckpointMetricOf(const google::protobuf::Map<std::string, double>& metrics) {
  // Classifiers with validation are judged by their validation accuracy,
  // MASKED_LM jobs with validation by their held-out loss, jobs without
  // validation by their training loss.
  CheckpointMetric m;
  m.name = metrics.count("val_accuracy") > 0         ? "val_accuracy"
           : metrics.count("val_masked_lm_loss") > 0 ? "val_masked_lm_loss"
                                                     : "train_loss";
  const auto it = metrics.find(m.name);
  m.value = it != metrics.end() ? it->second : 0.0;
  return m;
}

bool BecomesBestVersion(bool trainer_says_best, int64_t current_best_version) {
  return trainer_says_best || current_best_version == 0;
}

}  // namespace kaizen::jobs
