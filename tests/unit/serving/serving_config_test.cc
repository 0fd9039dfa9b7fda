// Serving config files and how a model's settings fall back to the
// server-wide defaults.
#include "server/serving/serving_config.h"

#include <gtest/gtest.h>

#include "absl/strings/match.h"

namespace kaizen::serving {
namespace {

TEST(ServingConfigTest, ParsesPerModelSettingsAndRejectsBadOnes) {
  auto c = ParseServingConfig(
      R"({"models": {"shoes": {"policy": "VERSION_POLICY_BEST", "maxBatchSize": 8,
                               "maxQueueDelayMs": 0.5, "maxQueueSize": 10},
                     "bags": {"maxBatchSize": 1, "instances": 3, "threadsPerInstance": 2}}})",
      "serving.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->at("shoes").policy, kaizen::v1::VERSION_POLICY_BEST);
  EXPECT_EQ(c->at("shoes").max_batch_size, 8);
  EXPECT_EQ(c->at("shoes").max_queue_delay, absl::Microseconds(500));
  EXPECT_TRUE(c->at("shoes").has_max_queue_delay);
  EXPECT_FALSE(c->at("bags").has_max_queue_delay);
  EXPECT_EQ(c->at("bags").instances, 3);
  EXPECT_EQ(c->at("bags").threads_per_instance, 2);
  EXPECT_EQ(c->at("shoes").instances, 0);
  EXPECT_EQ(
      ParseServingConfig(R"({"models": {"x": {"instances": 65}}})", "s.json").status().message(),
      "s.json: models.x.instances is 65; it must be 1..64");
  EXPECT_EQ(ParseServingConfig(R"({"models": {"x": {"threadsPerInstance": -1}}})", "s.json")
                .status()
                .message(),
            "s.json: models.x.threadsPerInstance is -1; it must be 1..256");
  auto bad = ParseServingConfig(R"({"models": {"x": {"maxBatchSize": -2}}})", "serving.json");
  EXPECT_EQ(bad.status().message(),
            "serving.json: models.x.maxBatchSize is -2; it must be 1..4096");
  auto typo = ParseServingConfig(R"({"models": {"x": {"maxBatch": 2}}})", "serving.json");
  EXPECT_EQ(typo.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(typo.status().message(), "serving.json: not a serving config"));
}

TEST(ServingConfigTest, AModelsOwnSettingsWinAndTheRestComeFromTheDefaults) {
  ServingConfig defaults;
  defaults.max_batch_size = 32;
  defaults.max_queue_delay = absl::Milliseconds(2);
  defaults.max_queue_size = 1024;
  defaults.instances = 2;
  defaults.threads_per_instance = 1;
  std::map<std::string, ServingConfig> models;
  models["shoes"].policy = kaizen::v1::VERSION_POLICY_BEST;
  models["shoes"].max_batch_size = 8;
  models["shoes"].has_max_queue_delay = true;  // 0 ms: do not wait
  models["bags"].max_queue_size = 10;
  models["bags"].instances = 4;

  const ServingConfig shoes = EffectiveServingConfig(models, "shoes", defaults);
  EXPECT_EQ(shoes.policy, kaizen::v1::VERSION_POLICY_BEST);
  EXPECT_EQ(shoes.max_batch_size, 8);
  EXPECT_EQ(shoes.max_queue_delay, absl::ZeroDuration());
  EXPECT_EQ(shoes.max_queue_size, 1024);

  const ServingConfig bags = EffectiveServingConfig(models, "bags", defaults);
  EXPECT_EQ(bags.policy, kaizen::v1::VERSION_POLICY_LATEST);
  EXPECT_EQ(bags.max_batch_size, 32);
  EXPECT_EQ(bags.max_queue_delay, absl::Milliseconds(2));
  EXPECT_EQ(bags.max_queue_size, 10);
  EXPECT_EQ(bags.instances, 4);
  EXPECT_EQ(bags.threads_per_instance, 1);
  EXPECT_EQ(shoes.instances, 2);

  const ServingConfig other = EffectiveServingConfig(models, "hats", defaults);
  EXPECT_EQ(other.policy, kaizen::v1::VERSION_POLICY_LATEST);
  EXPECT_EQ(other.max_batch_size, 32);
  EXPECT_EQ(other.max_queue_delay, absl::Milliseconds(2));
  EXPECT_EQ(other.max_queue_size, 1024);
}

TEST(ServingConfigTest, InstancesFillTheCoresWithWhatTheOperatorLeftOpen) {
  auto is = [](Instances i, int instances, int threads) {
    return i.instances == instances && i.threads_per_instance == threads;
  };
  // Neither set: one single-threaded instance per core on the CPU, one
  // instance with every core on a GPU.
  EXPECT_TRUE(is(ResolveInstances(0, 0, 8, /*gpu=*/false), 8, 1));
  EXPECT_TRUE(is(ResolveInstances(0, 0, 8, /*gpu=*/true), 1, 8));
  // One set: the other fills the cores, never below one.
  EXPECT_TRUE(is(ResolveInstances(2, 0, 8, false), 2, 4));
  EXPECT_TRUE(is(ResolveInstances(0, 4, 8, false), 2, 4));
  EXPECT_TRUE(is(ResolveInstances(16, 0, 8, false), 16, 1));
  EXPECT_TRUE(is(ResolveInstances(0, 16, 8, false), 1, 16));
  // Both set: kept as given, even oversubscribed.
  EXPECT_TRUE(is(ResolveInstances(3, 3, 2, false), 3, 3));
  EXPECT_TRUE(is(ResolveInstances(0, 0, 0, false), 1, 1));
  // Never beyond the limits a serving config may give.
  EXPECT_TRUE(is(ResolveInstances(0, 0, 128, false), 64, 1));
  EXPECT_TRUE(is(ResolveInstances(1, 1000, 8, false), 1, 256));
}

}  // namespace
}  // namespace kaizen::serving
