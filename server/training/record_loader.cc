#include "server/training/record_loader.h"

#include <sys/mman.h>
#include <torch/torch.h>

#include <algorithm>
#include <deque>
#include <exception>
#include <new>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/common/status_macros.h"
#include "server/imaging/image_convert.h"

namespace kaizen::training {

// Memory for batches of images: blocks in pages of their own (anonymous
// mappings), each back here when the last tensor on it goes, and kept for
// the next batch up to a byte budget (the rest unmapped). A batch is
// allocated on a decoding thread and freed on the trainer's: from malloc,
// glibc's dynamic mmap threshold soon puts such multi-MiB blocks on the
// heaps, where they fragment and stay resident (a 2-thread loader's PSS grew
// by 71-117 MB over 1-4 epochs of 800 images at 224x224, against 48-50 MB
// with these blocks; bench/RESULTS.md). Reusing the blocks spares the page
// faults of fresh mappings (plain mappings decoded 4-8% slower).
class RecordLoader::Blocks : public std::enable_shared_from_this<Blocks> {
 public:
  explicit Blocks(int64_t keep_bytes) : keep_bytes_(keep_bytes) {}
  ~Blocks() {
    for (const auto& [bytes, data] : free_) ::munmap(data, bytes);
  }

  // A uint8 tensor of `sizes` on a block of its own: a kept one of at least
  // its bytes and at most twice as many (passes differ in batch size), or a
  // new one.
  torch::Tensor Take(const std::vector<int64_t>& sizes) {
    int64_t count = 1;
    for (const int64_t d : sizes) count *= d;
    if (count == 0) return torch::empty(sizes, torch::kUInt8);
    const auto needed = static_cast<size_t>(count);
    void* data = nullptr;
    size_t bytes = needed;
    {
      absl::MutexLock lock(&mu_);
      for (auto it = free_.begin(); it != free_.end(); ++it) {
        if (it->first >= needed && it->first / 2 <= needed) {
          bytes = it->first;
          data = it->second;
          kept_bytes_ -= static_cast<int64_t>(bytes);
          free_.erase(it);
          break;
        }
      }
    }
    if (data == nullptr) {
      data = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (data == MAP_FAILED) throw std::bad_alloc();
    }
    try {
      return torch::from_blob(
          data, sizes, [self = shared_from_this(), bytes](void* p) { self->Give(p, bytes); },
          torch::TensorOptions(torch::kUInt8));
    } catch (...) {
      ::munmap(data, bytes);
      throw;
    }
  }

 private:
  // Keeps the block, the newest first in line; the oldest beyond the
  // budget are unmapped (a pass of another batch size replaces the last
  // one's blocks).
  void Give(void* data, size_t bytes) {
    absl::MutexLock lock(&mu_);
    free_.emplace_front(bytes, data);
    kept_bytes_ += static_cast<int64_t>(bytes);
    while (kept_bytes_ > keep_bytes_) {
      ::munmap(free_.back().second, free_.back().first);
      kept_bytes_ -= static_cast<int64_t>(free_.back().first);
      free_.pop_back();
    }
  }

  const int64_t keep_bytes_;
  absl::Mutex mu_;
  std::deque<std::pair<size_t, void*>> free_ ABSL_GUARDED_BY(mu_);
  int64_t kept_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

absl::StatusOr<std::unique_ptr<RecordLoader>> RecordLoader::Create(
    std::shared_ptr<const datasets::RecordFile> file, std::vector<int64_t> records,
    Options options) {
  const std::vector<int64_t>& shape = options.input_shape;
  if (shape.size() != 3 || (shape[0] != 1 && shape[0] != 3) || shape[1] < 1 || shape[2] < 1) {
    return absl::InvalidArgumentError(
        "the model's input_shape must be [C, H, W] with 1 or 3 channels");
  }
  if (options.batch_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch_size is ", options.batch_size, "; it must be at least 1"));
  }
  for (int64_t r : records) {
    if (r < 0 || static_cast<uint64_t>(r) >= file->size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("record ", r, " is not in ", file->path(), " (", file->size(), " records)"));
    }
  }
  options.threads = std::max(1, options.threads);
  options.prefetch_batches = std::max(1, options.prefetch_batches);
  const int threads = options.threads;
  std::unique_ptr<RecordLoader> loader(
      new RecordLoader(std::move(file), std::move(records), std::move(options)));
  // A thread that cannot start (the process is at its limit) leaves the
  // loader with those that did; none is an error, not a crash.
  for (int i = 0; i < threads; ++i) {
    try {
      loader->workers_.emplace_back([raw = loader.get()] { raw->Worker(); });
    } catch (const std::system_error& e) {
      if (loader->workers_.empty()) {
        return absl::ResourceExhaustedError(absl::StrCat("cannot start a thread to decode ",
                                                         loader->file_->path(), ": ", e.what()));
      }
      break;
    }
  }
  return loader;
}

RecordLoader::RecordLoader(std::shared_ptr<const datasets::RecordFile> file,
                           std::vector<int64_t> records, Options options)
    : file_(std::move(file)),
      records_(std::move(records)),
      options_(std::move(options)),
      sampler_(static_cast<int64_t>(records_.size()), options_.batch_size,
               options_.drop_last_fraction, options_.seed),
      // The batches a pass holds at once: the prefetch window, one on each
      // decoding thread, the trainer's and the one it is about to drop.
      blocks_(std::make_shared<Blocks>((options_.prefetch_batches + options_.threads + 2) *
                                       options_.batch_size * options_.input_shape[0] *
                                       options_.input_shape[1] * options_.input_shape[2])) {}

RecordLoader::~RecordLoader() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& t : workers_) t.join();
}

std::vector<std::vector<int64_t>> RecordLoader::EpochRecords(int32_t epoch) const {
  std::vector<std::vector<int64_t>> batches = sampler_.EpochBatches(epoch);
  for (std::vector<int64_t>& batch : batches) {
    for (int64_t& i : batch) i = records_[i];
  }
  return batches;
}

void RecordLoader::StartEpoch(int32_t epoch) { Start(sampler_.EpochBatches(epoch)); }

void RecordLoader::Start(std::vector<std::vector<int64_t>> batches) {
  size_t largest = 1;
  for (std::vector<int64_t>& batch : batches) {
    for (int64_t& i : batch) i = records_.at(static_cast<size_t>(i));
    largest = std::max(largest, batch.size());
  }
  size_t window = static_cast<size_t>(options_.prefetch_batches);
  if (options_.max_prefetch_bytes > 0) {
    const std::vector<int64_t>& shape = options_.input_shape;
    const uint64_t batch_bytes = static_cast<uint64_t>(largest) * static_cast<uint64_t>(shape[0]) *
                                 static_cast<uint64_t>(shape[1]) * static_cast<uint64_t>(shape[2]);
    window = std::clamp<size_t>(
        static_cast<size_t>(static_cast<uint64_t>(options_.max_prefetch_bytes) / batch_bytes), 1,
        window);
  }
  absl::MutexLock lock(&mu_);
  window_ = window;
  ++generation_;
  batches_ = std::move(batches);
  next_to_load_ = 0;
  next_to_return_ = 0;
  ready_.clear();
}

void RecordLoader::Worker() {
  while (true) {
    size_t k;
    uint64_t generation;
    std::vector<int64_t> batch;
    {
      absl::MutexLock lock(&mu_);
      // Work when a batch is due and within the prefetch window.
      mu_.Await(absl::Condition(
          +[](RecordLoader* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) {
            return self->stopping_ || (self->next_to_load_ < self->batches_.size() &&
                                       self->next_to_load_ < self->next_to_return_ + self->window_);
          },
          this));
      if (stopping_) return;
      k = next_to_load_++;
      generation = generation_;
      batch = batches_[k];
    }
    absl::StatusOr<ImageSet> loaded = absl::InternalError("not loaded");
    try {
      loaded = Load(batch);
    } catch (const std::exception& e) {  // out of memory in torch or the decoder
      loaded = absl::ResourceExhaustedError(
          absl::StrCat(file_->path(), ": loading batch ", k, ": ", e.what()));
    }
    absl::MutexLock lock(&mu_);
    if (generation == generation_) ready_.emplace(k, std::move(loaded));
  }
}

absl::StatusOr<std::optional<ImageSet>> RecordLoader::Next() {
  absl::MutexLock lock(&mu_);
  if (next_to_return_ >= batches_.size()) return std::optional<ImageSet>();
  mu_.Await(absl::Condition(
      +[](RecordLoader* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) {
        return self->ready_.count(self->next_to_return_) > 0;
      },
      this));
  auto it = ready_.find(next_to_return_);
  absl::StatusOr<ImageSet> batch = std::move(it->second);
  ready_.erase(it);
  ++next_to_return_;
  if (!batch.ok()) {
    // The epoch ends at a bad record: no more loads, nothing more returned.
    ++generation_;
    next_to_load_ = next_to_return_ = batches_.size();
    ready_.clear();
    return batch.status();
  }
  return std::optional<ImageSet>(*std::move(batch));
}

absl::StatusOr<ImageSet> RecordLoader::Load(const std::vector<int64_t>& batch) const {
  const int64_t C = options_.input_shape[0], H = options_.input_shape[1],
                W = options_.input_shape[2];
  const auto n = static_cast<int64_t>(batch.size());
  ImageSet set;
  const bool pin = options_.pin_memory && torch::cuda::is_available();
  set.images =
      pin ? torch::empty({n, C, H, W}, torch::TensorOptions(torch::kUInt8).pinned_memory(true))
          : blocks_->Take({n, C, H, W});
  set.labels = torch::empty({n}, torch::TensorOptions(torch::kLong).pinned_memory(pin));
  uint8_t* out = set.images.data_ptr<uint8_t>();
  int64_t* labels = set.labels.data_ptr<int64_t>();
  for (int64_t k = 0; k < n; ++k) {
    const uint64_t i = static_cast<uint64_t>(batch[k]);
    const datasets::RecordInfo& info = file_->info(i);
    labels[k] = info.label;
    uint8_t* dst = out + k * C * H * W;
    // The file's pages leave the resident set once read: an epoch over a
    // file larger than memory must not grow the process to its size.
    struct ReleaseRecord {
      const datasets::RecordFile& file;
      uint64_t i;
      ~ReleaseRecord() { file.Release(i); }
    } release{*file_, i};
    ASSIGN_OR_RETURN(const datasets::RecordFile::Pixels pixels,
                     file_->Decode(i, options_.decode_limits));
    imaging::ConvertImage(pixels.data(), info.height, info.width, info.channels, C, H, W, dst);
  }
  return set;
}

}  // namespace kaizen::training
