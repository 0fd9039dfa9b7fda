// Per-model serving settings: parsing the operator's serving config file
// (--serving_config) and filling what a model leaves unset from the
// server-wide defaults. Pure functions; no I/O.
#pragma once

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "kaizen/v1/inference_service.pb.h"
#include "kaizen/v1/model_service.pb.h"

namespace kaizen::serving {

// Per-model serving settings; zero/unspecified fields take the server-wide
// defaults.
struct ServingConfig {
  kaizen::v1::VersionPolicy policy = kaizen::v1::VERSION_POLICY_UNSPECIFIED;
  int max_batch_size = 0;
  absl::Duration max_queue_delay = absl::ZeroDuration();
  bool has_max_queue_delay = false;
  int max_queue_size = 0;
  // Executor instances, each running one batch at a time on its own thread.
  int instances = 0;
  // Intra-op threads of each instance.
  int threads_per_instance = 0;
};

// Bounds on executor instances per model and intra-op threads per instance.
inline constexpr int kMaxInstances = 64;
inline constexpr int kMaxThreadsPerInstance = 256;

// The server-wide instance count and threads per instance when the operator
// sets neither, one or both: on the CPU, one single-threaded instance per
// core (measured in bench/predict/instances_bench.sh: a batch of one costs
// less on one thread than on two, and two instances overlap); on a GPU one
// instance with every core. A value the operator gives is kept; the other
// fills the cores; neither exceeds kMaxInstances / kMaxThreadsPerInstance.
// `cores` is the server's intra-op thread budget.
struct Instances {
  int instances = 1;
  int threads_per_instance = 1;
};
Instances ResolveInstances(int instances, int threads_per_instance, int cores, bool gpu);

// Parses a serving config file (proto3 JSON of kaizen.v1.ServingConfigFile).
// InvalidArgument naming `what` (the file) and what is wrong.
absl::StatusOr<std::map<std::string, ServingConfig>> ParseServingConfig(absl::string_view json,
                                                                        absl::string_view what);

// The settings model `name` is served with: its entry in `models` where set,
// `defaults` (policy, max_batch_size, max_queue_delay, max_queue_size,
// instances, threads_per_instance) otherwise, and the LATEST policy when
// neither names one. `defaults` must set every field but the policy.
ServingConfig EffectiveServingConfig(const std::map<std::string, ServingConfig>& models,
                                     const std::string& name, const ServingConfig& defaults);

}  // namespace kaizen::serving
