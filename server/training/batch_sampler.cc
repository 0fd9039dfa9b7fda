#include "server/training/batch_sampler.h"

#include <algorithm>
#include <numeric>
#include <random>

namespace kaizen::training {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

constexpr uint64_t kShuffleStream = 1;

// Datasets of at least this many preferred batches keep the preferred size.
constexpr int64_t kEvenBatchesBelow = 20;

}  // namespace

uint64_t DeriveSeed(uint64_t seed, uint64_t stream, uint64_t epoch) {
  return SplitMix64(SplitMix64(SplitMix64(seed) ^ stream) ^ epoch);
}

int64_t EvenBatchSize(int64_t num_examples, int64_t preferred) {
  preferred = std::max<int64_t>(1, preferred);
  if (num_examples < 1) return 1;
  if (num_examples <= preferred) return num_examples;
  if (num_examples >= kEvenBatchesBelow * preferred) return preferred;
  int64_t best = preferred;
  double best_fill = -1;
  for (int64_t b = preferred; b >= (preferred + 1) / 2; --b) {
    const int64_t rest = num_examples % b;
    const double fill = rest == 0 ? 1.0 : static_cast<double>(rest) / static_cast<double>(b);
    if (fill > best_fill) {  // strictly: the larger size wins a tie
      best = b;
      best_fill = fill;
    }
  }
  return best;
}

BatchSampler::BatchSampler(int64_t num_examples, int64_t batch_size, double drop_last_fraction,
                           uint64_t seed)
    : num_examples_(std::max<int64_t>(0, num_examples)),
      batch_size_(std::max<int64_t>(1, batch_size)),
      seed_(seed) {
  const int64_t full = num_examples_ / batch_size_;
  const int64_t rest = num_examples_ % batch_size_;
  const bool keep_rest =
      rest > 0 && (full == 0 || static_cast<double>(rest) >=
                                    drop_last_fraction * static_cast<double>(batch_size_));
  batches_per_epoch_ = full + (keep_rest ? 1 : 0);
}

std::vector<std::vector<int64_t>> BatchSampler::EpochBatches(int32_t epoch) const {
  std::vector<int64_t> order(num_examples_);
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(DeriveSeed(seed_, kShuffleStream, static_cast<uint64_t>(epoch)));
  for (int64_t i = num_examples_ - 1; i > 0; --i) {
    std::swap(order[i], order[rng() % static_cast<uint64_t>(i + 1)]);
  }
  std::vector<std::vector<int64_t>> batches;
  batches.reserve(batches_per_epoch_);
  for (int64_t b = 0; b < batches_per_epoch_; ++b) {
    const int64_t begin = b * batch_size_;
    const int64_t end = std::min(num_examples_, begin + batch_size_);
    batches.emplace_back(order.begin() + begin, order.begin() + end);
  }
  return batches;
}

}  // namespace kaizen::training
