#include "server/training/batch_sampler.h"

#include <algorithm>
#include <set>

#include "gtest/gtest.h"

namespace kaizen::training {
namespace {

TEST(BatchSamplerTest, DropsTinyLastBatch) {
  // 100 images in batches of 32: the 4-image rest is dropped.
  BatchSampler tiny_rest(100, 32, 0.5, 1);
  EXPECT_EQ(tiny_rest.batches_per_epoch(), 3);
  for (const auto& batch : tiny_rest.EpochBatches(0)) EXPECT_EQ(batch.size(), 32u);
  // A rest of 20 >= 16 is kept.
  BatchSampler big_rest(84, 32, 0.5, 1);
  ASSERT_EQ(big_rest.batches_per_epoch(), 3);
  EXPECT_EQ(big_rest.EpochBatches(0).back().size(), 20u);
  // Fewer images than one batch still train.
  EXPECT_EQ(BatchSampler(5, 32, 0.5, 1).batches_per_epoch(), 1);
}

TEST(BatchSamplerTest, ShufflesPerEpochReproducibly) {
  BatchSampler s(50, 10, 0.5, 9);
  const auto e0 = s.EpochBatches(0), e1 = s.EpochBatches(1);
  EXPECT_EQ(e0, BatchSampler(50, 10, 0.5, 9).EpochBatches(0));
  EXPECT_NE(e0, e1);
  std::set<int64_t> seen;
  for (const auto& b : e0) seen.insert(b.begin(), b.end());
  EXPECT_EQ(seen.size(), 50u);
}

}  // namespace
}  // namespace kaizen::training
