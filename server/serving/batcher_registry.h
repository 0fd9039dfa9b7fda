// BatcherRegistry: the dynamic batcher (model_batcher.h) of each served
// model, made on the model's first request with the model's serving config.
// Owns the batchers; they live as long as the registry, since a caller may
// still hold one after Stop().
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "server/common/clock.h"
#include "server/serving/model_batcher.h"
#include "server/serving/serving_config.h"

namespace kaizen::metrics {
class Metrics;
}

namespace kaizen::serving {

class BatcherRegistry {
 public:
  struct Options {
    // Per-model settings (batching, instances, threads); what a model leaves
    // unset comes from `defaults`.
    std::map<std::string, ServingConfig> models;
    ServingConfig defaults;
    // Given to every batcher (batch delays, deadlines).
    common::Clock* clock = common::Clock::Real();
    // Given to every batcher (see ModelBatcher::Options::before_forward).
    std::function<void(const std::string& model)> before_forward;
  };

  // `metrics` may be null.
  BatcherRegistry(Options options, metrics::Metrics* metrics);
  // Stops every batcher.
  ~BatcherRegistry();
  BatcherRegistry(const BatcherRegistry&) = delete;
  BatcherRegistry& operator=(const BatcherRegistry&) = delete;

  // The batcher of model `name`, made on first use; null once stopping.
  ModelBatcher* Get(const std::string& name);

  // Stops every batcher (their queued requests fail with UNAVAILABLE); Get()
  // returns null from now on. Safe to call more than once.
  void Stop();

 private:
  const Options options_;
  metrics::Metrics* metrics_;
  // Serialises Stop(): each batcher's executor is joined once.
  absl::Mutex stop_mu_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<ModelBatcher>> batchers_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace kaizen::serving
