#include "server/serving/batcher_registry.h"

#include <vector>

namespace kaizen::serving {

BatcherRegistry::BatcherRegistry(Options options, metrics::Metrics* metrics)
    : options_(std::move(options)), metrics_(metrics) {}

BatcherRegistry::~BatcherRegistry() { Stop(); }

ModelBatcher* BatcherRegistry::Get(const std::string& name) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return nullptr;
  std::unique_ptr<ModelBatcher>& b = batchers_[name];
  if (!b) {
    const ServingConfig c = EffectiveServingConfig(options_.models, name, options_.defaults);
    ModelBatcher::Options o;
    o.model_name = name;
    o.max_batch_size = c.max_batch_size;
    o.max_queue_delay = c.max_queue_delay;
    o.max_queue_size = c.max_queue_size;
    o.instances = c.instances;
    o.threads = c.threads_per_instance;
    o.clock = options_.clock;
    if (options_.before_forward) {
      o.before_forward = [hook = options_.before_forward, name] { hook(name); };
    }
    b = std::make_unique<ModelBatcher>(o, metrics_);
  }
  return b.get();
}

void BatcherRegistry::Stop() {
  absl::MutexLock stop_lock(&stop_mu_);
  std::vector<ModelBatcher*> batchers;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    for (auto& [name, b] : batchers_) batchers.push_back(b.get());
  }
  // Outside the lock: stopping joins each executor.
  for (ModelBatcher* b : batchers) b->Stop();
}

}  // namespace kaizen::serving
