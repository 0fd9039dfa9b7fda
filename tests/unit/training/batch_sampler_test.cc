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

// A batch size chosen for a small dataset divides it without a tiny last
// batch: no batch is under half the size of the others, and an epoch leaves
// out no image (or, where no size in range does better, as for 121 images
// at 8, fewer than half a batch, shuffled anew every epoch).
TEST(BatchSamplerTest, EvenBatchSizeLeavesNoTinyLastBatch) {
  EXPECT_EQ(EvenBatchSize(25, 16), 13);  // 13 + 12, not 16 + 9
  EXPECT_EQ(EvenBatchSize(100, 16), 10);
  EXPECT_EQ(EvenBatchSize(25, 8), 5);
  EXPECT_EQ(EvenBatchSize(17, 16), 9);     // 9 + 8
  EXPECT_EQ(EvenBatchSize(10, 16), 10);    // one batch of everything
  EXPECT_EQ(EvenBatchSize(64, 16), 16);    // already even: the preferred size
  EXPECT_EQ(EvenBatchSize(1000, 16), 16);  // many batches: the preferred size
  EXPECT_EQ(EvenBatchSize(0, 16), 1);
  int dropped = 0;
  for (int64_t preferred : {8, 16, 32, 64}) {
    for (int64_t n = 1; n < 20 * preferred; ++n) {
      const int64_t b = EvenBatchSize(n, preferred);
      ASSERT_LE(b, preferred) << n;
      ASSERT_GE(b, std::min(n, (preferred + 1) / 2)) << n;
      const BatchSampler sampler(n, b, 0.5, 1);
      int64_t seen = 0;
      for (const auto& batch : sampler.EpochBatches(0)) {
        seen += static_cast<int64_t>(batch.size());
        EXPECT_GE(2 * static_cast<int64_t>(batch.size()), b) << n << " in batches of " << b;
      }
      EXPECT_GE(2 * seen, 2 * n - b) << n << " in batches of " << b;
      dropped += seen < n ? 1 : 0;
    }
  }
  EXPECT_EQ(dropped, 1);  // 121 at 8
}

}  // namespace
}  // namespace kaizen::training
