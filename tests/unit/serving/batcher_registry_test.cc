// One batcher per model, made on first use, and none once stopped.
#include "server/serving/batcher_registry.h"

#include <gtest/gtest.h>

namespace kaizen::serving {
namespace {

TEST(BatcherRegistryTest, GivesEachModelOneBatcherAndNoneOnceStopped) {
  BatcherRegistry::Options o;
  o.models["shoes"].max_batch_size = 4;
  o.defaults.max_batch_size = 8;
  o.defaults.max_queue_size = 16;
  BatcherRegistry registry(o, nullptr);
  ModelBatcher* shoes = registry.Get("shoes");
  ASSERT_NE(shoes, nullptr);
  EXPECT_EQ(registry.Get("shoes"), shoes);
  ModelBatcher* bags = registry.Get("bags");
  ASSERT_NE(bags, nullptr);
  EXPECT_NE(bags, shoes);
  registry.Stop();
  EXPECT_EQ(registry.Get("shoes"), nullptr);
  EXPECT_EQ(registry.Get("hats"), nullptr);
  registry.Stop();  // again: nothing to do
}

}  // namespace
}  // namespace kaizen::serving
