#include "server/serving/serving_config.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"

namespace kaizen::serving {

absl::StatusOr<std::map<std::string, ServingConfig>> ParseServingConfig(absl::string_view json,
                                                                        absl::string_view what) {
  kaizen::v1::ServingConfigFile file;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  const auto status =
      google::protobuf::util::JsonStringToMessage(std::string(json), &file, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": not a serving config: ", std::string(status.message())));
  }
  std::map<std::string, ServingConfig> out;
  for (const auto& [name, m] : file.models()) {
    const std::string where = absl::StrCat(what, ": models.", name);
    if (m.max_batch_size() < 0 || m.max_batch_size() > 4096) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".maxBatchSize is ", m.max_batch_size(), "; it must be 1..4096"));
    }
    if (m.max_queue_size() < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".maxQueueSize is ", m.max_queue_size(), "; it must be >= 1"));
    }
    if (m.has_max_queue_delay_ms() &&
        (m.max_queue_delay_ms() < 0 || m.max_queue_delay_ms() > 10000)) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ".maxQueueDelayMs is ", m.max_queue_delay_ms(), "; it must be 0..10000"));
    }
    if (m.instances() < 0 || m.instances() > kMaxInstances) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".instances is ", m.instances(), "; it must be 1..", kMaxInstances));
    }
    if (m.threads_per_instance() < 0 || m.threads_per_instance() > kMaxThreadsPerInstance) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".threadsPerInstance is ",
                                                     m.threads_per_instance(), "; it must be 1..",
                                                     kMaxThreadsPerInstance));
    }
    ServingConfig c;
    c.instances = m.instances();
    c.threads_per_instance = m.threads_per_instance();
    c.policy = m.policy();
    c.max_batch_size = m.max_batch_size();
    c.max_queue_size = m.max_queue_size();
    c.has_max_queue_delay = m.has_max_queue_delay_ms();
    c.max_queue_delay = absl::Microseconds(static_cast<int64_t>(m.max_queue_delay_ms() * 1000));
    out[name] = c;
  }
  return out;
}

ServingConfig EffectiveServingConfig(const std::map<std::string, ServingConfig>& models,
                                     const std::string& name, const ServingConfig& defaults) {
  ServingConfig c;
  auto it = models.find(name);
  if (it != models.end()) c = it->second;
  if (c.policy == kaizen::v1::VERSION_POLICY_UNSPECIFIED) c.policy = defaults.policy;
  if (c.policy == kaizen::v1::VERSION_POLICY_UNSPECIFIED)
    c.policy = kaizen::v1::VERSION_POLICY_LATEST;
  if (c.max_batch_size <= 0) c.max_batch_size = defaults.max_batch_size;
  if (c.max_queue_size <= 0) c.max_queue_size = defaults.max_queue_size;
  if (!c.has_max_queue_delay) c.max_queue_delay = defaults.max_queue_delay;
  if (c.instances <= 0) c.instances = defaults.instances;
  if (c.threads_per_instance <= 0) c.threads_per_instance = defaults.threads_per_instance;
  return c;
}

Instances ResolveInstances(int instances, int threads_per_instance, int cores, bool gpu) {
  cores = std::max(1, cores);
  Instances out;
  if (instances <= 0 && threads_per_instance <= 0) {
    out.instances = gpu ? 1 : cores;
    out.threads_per_instance = gpu ? cores : 1;
  } else if (instances <= 0) {
    out.threads_per_instance = threads_per_instance;
    out.instances = std::max(1, cores / threads_per_instance);
  } else if (threads_per_instance <= 0) {
    out.instances = instances;
    out.threads_per_instance = std::max(1, cores / instances);
  } else {
    out.instances = instances;
    out.threads_per_instance = threads_per_instance;
  }
  out.instances = std::min(out.instances, kMaxInstances);
  out.threads_per_instance = std::min(out.threads_per_instance, kMaxThreadsPerInstance);
  return out;
}

}  // namespace kaizen::serving
