// Which examples form each batch of an epoch: a seeded shuffle per epoch (a
// pure function of seed and epoch, so a resumed job sees the same order),
// with a last batch smaller than drop_last_fraction * batch_size dropped
// (a 4-image batch ruins BatchNorm statistics on small datasets).
#pragma once

#include <cstdint>
#include <vector>

namespace kaizen::training {

class BatchSampler {
 public:
  BatchSampler(int64_t num_examples, int64_t batch_size, double drop_last_fraction, uint64_t seed);

  // Batches per epoch (>= 1 while num_examples >= 1).
  int64_t batches_per_epoch() const { return batches_per_epoch_; }

  // The batches of epoch `epoch` (0-based), each a list of example indices.
  std::vector<std::vector<int64_t>> EpochBatches(int32_t epoch) const;

 private:
  int64_t num_examples_;
  int64_t batch_size_;
  int64_t batches_per_epoch_;
  uint64_t seed_;
};

// The batch size for `num_examples` examples when the caller chose none and
// `preferred` is the default: `num_examples` itself when they fit in one
// batch; below 20 preferred batches per epoch, the size in
// [ceil(preferred / 2), preferred] whose last batch is fullest (25 images at
// 16 would train on 16 and drop 9, or add a 9-image batch; 13 gives 13 + 12,
// 100 gives 10 x 10), the larger on a tie; `preferred` otherwise, where the
// rest is at most a twentieth of an epoch. 1 when num_examples < 1.
int64_t EvenBatchSize(int64_t num_examples, int64_t preferred);

// A 64-bit seed for stream `stream` of epoch `epoch` of a job seeded `seed`
// (splitmix64 of the three), so that every epoch's randomness can be
// recreated on resume without saving generator states.
uint64_t DeriveSeed(uint64_t seed, uint64_t stream, uint64_t epoch);

}  // namespace kaizen::training
