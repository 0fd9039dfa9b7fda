#include "server/training/image_source.h"

#include <torch/torch.h>

#include <algorithm>
#include <stdexcept>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"

namespace kaizen::training {
namespace {

std::vector<std::vector<int64_t>> Ranges(int64_t size, int64_t batch_size) {
  std::vector<std::vector<int64_t>> batches;
  for (int64_t begin = 0; begin < size; begin += batch_size) {
    std::vector<int64_t>& rows = batches.emplace_back();
    for (int64_t i = begin; i < std::min(size, begin + batch_size); ++i) rows.push_back(i);
  }
  return batches;
}

torch::Tensor LabelsOf(const datasets::RecordFile& file, const std::vector<int64_t>& records) {
  torch::Tensor labels = torch::empty({static_cast<int64_t>(records.size())}, torch::kLong);
  int64_t* l = labels.data_ptr<int64_t>();
  for (size_t k = 0; k < records.size(); ++k) {
    l[k] = file.info(static_cast<uint64_t>(records[k])).label;
  }
  return labels;
}

}  // namespace

ImageSource::ImageSource(ImageSet set, const torch::Device& device) : device_(device) {
  Reset(std::move(set));
}

void ImageSource::Reset(ImageSet set) {
  set_.images = set.images.defined() ? set.images.to(device_) : set.images;
  set_.labels = set.labels.defined() ? set.labels.to(device_) : set.labels;
  labels_ = set_.labels;
}

absl::StatusOr<ImageSource> ImageSource::Streamed(std::shared_ptr<const datasets::RecordFile> file,
                                                  std::vector<int64_t> records,
                                                  RecordLoader::Options options,
                                                  const torch::Device& device) {
  options.pin_memory = options.pin_memory || device.is_cuda();
  ImageSource source;
  source.device_ = device;
  ASSIGN_OR_RETURN(source.loader_, RecordLoader::Create(file, records, std::move(options)));
  // Checked by Create: every record is in range.
  source.labels_ = LabelsOf(*file, records).to(device);
  source.set_.labels = source.labels_;
  return source;
}

absl::StatusOr<ImageSource> ImageSource::Load(std::shared_ptr<const datasets::RecordFile> file,
                                              std::vector<int64_t> records,
                                              RecordLoader::Options options,
                                              const torch::Device& device) {
  const std::vector<int64_t> shape = options.input_shape;
  const auto n = static_cast<int64_t>(records.size());
  ASSIGN_OR_RETURN(std::unique_ptr<RecordLoader> loader,
                   RecordLoader::Create(file, records, std::move(options)));
  ImageSet set;
  set.images = torch::empty({n, shape.at(0), shape.at(1), shape.at(2)}, torch::kUInt8);
  set.labels = LabelsOf(*file, records);
  constexpr int64_t kBatch = 64;
  loader->Start(Ranges(n, kBatch));
  int64_t begin = 0;
  while (true) {
    ASSIGN_OR_RETURN(std::optional<ImageSet> batch, loader->Next());
    if (!batch) break;
    const int64_t b = batch->images.size(0);
    set.images.narrow(0, begin, b).copy_(batch->images);
    begin += b;
  }
  return ImageSource(std::move(set), device);
}

void ImageSource::Begin(std::vector<std::vector<int64_t>> batches) {
  if (!streamed()) return;
  pass_ = std::move(batches);
  next_ = 0;
  loader_->Start(pass_);
}

void ImageSource::BeginRanges(int64_t batch_size) { Begin(Ranges(size(), batch_size)); }

torch::Tensor ImageSource::Rows(const std::vector<int64_t>& rows) {
  if (streamed()) return NextStreamed(rows);
  const torch::Tensor idx = torch::tensor(rows, torch::kLong).to(set_.images.device());
  return set_.images.index_select(0, idx);
}

torch::Tensor ImageSource::Range(int64_t begin, int64_t n) {
  if (!streamed()) return set_.images.narrow(0, begin, n);
  std::vector<int64_t> rows(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) rows[static_cast<size_t>(k)] = begin + k;
  return NextStreamed(rows);
}

torch::Tensor ImageSource::NextStreamed(const std::vector<int64_t>& rows) {
  if (next_ >= pass_.size() || pass_[next_] != rows) {
    throw std::logic_error(
        "a streamed image source was asked for rows out of the order its pass announced");
  }
  ++next_;
  absl::StatusOr<std::optional<ImageSet>> batch = loader_->Next();
  if (!batch.ok()) throw ImageSourceError(batch.status());
  if (!batch->has_value()) throw std::logic_error("a streamed image source's pass ended early");
  return (*batch)->images.to(device_, /*non_blocking=*/device_.is_cuda());
}

}  // namespace kaizen::training
