// The images a job trains and evaluates on, by row: held in memory,
// converted once to the model's input (an ImageSet, as small datasets always
// were), or streamed from the dataset's record file through a RecordLoader,
// so that a job's memory does not grow with its dataset.
//
// Callers read batches of rows. A pass is announced with Begin (the batches
// in the order they will be asked for) so that a streamed source decodes
// them ahead on its loader's threads; a source in memory ignores it and
// answers any rows. One thread uses a source.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/datasets/record_file.h"
#include "server/training/image_set.h"
#include "server/training/record_loader.h"

namespace kaizen::training {

// Thrown (from Rows and Range) when a streamed record cannot be read or
// decoded; carries the loader's status (DataLoss for a damaged record,
// InvalidArgument naming one that does not decode).
class ImageSourceError : public std::runtime_error {
 public:
  explicit ImageSourceError(absl::Status status)
      : std::runtime_error(status.ToString()), status_(std::move(status)) {}
  const absl::Status& status() const { return status_; }

 private:
  absl::Status status_;
};

class ImageSource {
 public:
  // No images.
  ImageSource() = default;
  // In memory: `set` on `device`.
  ImageSource(ImageSet set, const torch::Device& device);
  // Streamed: row k is record `records[k]` of `file`, decoded and converted
  // as `options` say (input_shape, threads, prefetch_batches, decode
  // limits); batches land on `device`. InvalidArgument for a bad shape or
  // record index.
  static absl::StatusOr<ImageSource> Streamed(std::shared_ptr<const datasets::RecordFile> file,
                                              std::vector<int64_t> records,
                                              RecordLoader::Options options,
                                              const torch::Device& device);
  // Every record of `records` converted into memory, read on the loader's
  // threads: no decoded copy of the whole dataset at its stored size, only
  // the converted one.
  static absl::StatusOr<ImageSource> Load(std::shared_ptr<const datasets::RecordFile> file,
                                          std::vector<int64_t> records,
                                          RecordLoader::Options options,
                                          const torch::Device& device);

  ImageSource(ImageSource&&) = default;
  ImageSource& operator=(ImageSource&&) = default;

  int64_t size() const { return labels_.defined() ? labels_.size(0) : 0; }
  bool streamed() const { return loader_ != nullptr; }
  // int64 [N] on the device.
  const torch::Tensor& labels() const { return labels_; }
  // The images in memory, or nullptr when streamed.
  const ImageSet* in_memory() const { return streamed() ? nullptr : &set_; }
  // Replaces the images in memory (INCREMENTAL adds its replayed exemplars).
  void Reset(ImageSet set);

  // Announces a pass over `batches` (rows each), in order; abandons the one
  // in progress.
  void Begin(std::vector<std::vector<int64_t>> batches);
  // The same for rows [0, size) in ranges of `batch_size`, as Range reads them.
  void BeginRanges(int64_t batch_size);
  // uint8 [B, C, H, W] of `rows` on the device. Streamed, `rows` must be the
  // pass's next batch (std::logic_error otherwise).
  torch::Tensor Rows(const std::vector<int64_t>& rows);
  // Rows [begin, begin + n).
  torch::Tensor Range(int64_t begin, int64_t n);

 private:
  torch::Tensor NextStreamed(const std::vector<int64_t>& rows);

  ImageSet set_;  // streamed: labels only
  torch::Tensor labels_;
  torch::Device device_ = torch::kCPU;
  std::unique_ptr<RecordLoader> loader_;
  // The streamed pass: its batches and the next one to be read.
  std::vector<std::vector<int64_t>> pass_;
  size_t next_ = 0;
};

}  // namespace kaizen::training
