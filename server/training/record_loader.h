// The streaming input pipeline over a record file (datasets/record_file.h):
// the batches of one epoch, in the seeded order of a BatchSampler, each read
// from the memory map, decoded (JPEG/PNG records) and converted to the
// model's input exactly as served images are (imaging::ConvertImage), on a
// pool of worker threads separate from the training threads, a bounded
// number of batches ahead of the trainer. Memory is the prefetched batches,
// not the dataset: a dataset larger than RAM streams from disk (the page
// cache holds what the kernel can).
//
// One thread consumes (StartEpoch, Next); the workers are the loader's own.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/datasets/image_decoder.h"
#include "server/datasets/record_file.h"
#include "server/training/batch_sampler.h"
#include "server/training/image_set.h"

namespace kaizen::training {

class RecordLoader {
 public:
  struct Options {
    std::vector<int64_t> input_shape;  // the model's [C, H, W]
    int64_t batch_size = 32;
    // As BatchSampler: a last batch below this share of batch_size is dropped.
    double drop_last_fraction = 0.5;
    uint64_t seed = 1;
    // Decoding threads (at least 1).
    int threads = 2;
    // Batches decoded ahead of the trainer at most (at least 1), and fewer
    // when they would hold more than max_prefetch_bytes of images (0: no
    // byte cap; at least one batch either way).
    int prefetch_batches = 4;
    int64_t max_prefetch_bytes = 0;
    // What decoding one record may cost.
    datasets::DecodeLimits decode_limits;
    // Batches in page-locked (pinned) host memory, so that copying them to
    // a GPU with non_blocking=true overlaps the next step; ignored where no
    // GPU is available (pinning needs the CUDA runtime).
    bool pin_memory = false;
  };

  // A loader over records `records` of `file` (e.g. a training split; each
  // in range). InvalidArgument for a bad shape, batch size or record index;
  // ResourceExhausted when not one decoding thread can start (fewer than
  // asked is enough).
  static absl::StatusOr<std::unique_ptr<RecordLoader>> Create(
      std::shared_ptr<const datasets::RecordFile> file, std::vector<int64_t> records,
      Options options);
  // Stops the workers (an epoch in progress is abandoned).
  ~RecordLoader();
  RecordLoader(const RecordLoader&) = delete;
  RecordLoader& operator=(const RecordLoader&) = delete;

  int64_t batches_per_epoch() const { return sampler_.batches_per_epoch(); }
  int64_t size() const { return static_cast<int64_t>(records_.size()); }

  // Starts epoch `epoch` (0-based): its order is BatchSampler's for the
  // seed and epoch, so a resumed job sees the same batches. Abandons the
  // pass in progress.
  void StartEpoch(int32_t epoch);
  // Starts a pass over `batches` in order instead, each a list of positions
  // in `records` (in range: the caller's own rows), e.g. an evaluation in
  // sequential ranges or the rest of an epoch being resumed. Abandons the
  // pass in progress.
  void Start(std::vector<std::vector<int64_t>> batches);
  // The pass's next batch (uint8 [B, C, H, W] and labels), or nullopt after
  // its last. DataLoss (naming the record) for a damaged record: a CRC
  // mismatch, or bytes that do not decode, or not to the shape its index
  // entry gives (the server checked every record when it stored it);
  // ResourceExhausted when memory ran out. The pass ends there.
  absl::StatusOr<std::optional<ImageSet>> Next();

  // Record indices (into the file) of each batch of `epoch`, in order.
  std::vector<std::vector<int64_t>> EpochRecords(int32_t epoch) const;

 private:
  RecordLoader(std::shared_ptr<const datasets::RecordFile> file, std::vector<int64_t> records,
               Options options);

  class Blocks;

  void Worker();
  // Reads, decodes and converts the records of one batch.
  absl::StatusOr<ImageSet> Load(const std::vector<int64_t>& batch) const;

  const std::shared_ptr<const datasets::RecordFile> file_;
  const std::vector<int64_t> records_;
  const Options options_;
  const BatchSampler sampler_;

  absl::Mutex mu_;
  // The pass being served; a worker's result for an older one is dropped.
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::vector<int64_t>> batches_ ABSL_GUARDED_BY(mu_);
  size_t next_to_load_ ABSL_GUARDED_BY(mu_) = 0;
  size_t next_to_return_ ABSL_GUARDED_BY(mu_) = 0;
  // Batches loaded or loading ahead of next_to_return_, at most.
  size_t window_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<size_t, absl::StatusOr<ImageSet>> ready_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;
  // The batches' memory; it outlives the loader while a batch does.
  const std::shared_ptr<Blocks> blocks_;
};

}  // namespace kaizen::training
