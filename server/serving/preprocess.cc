#include "server/serving/preprocess.h"

#include <torch/torch.h>

#include <cmath>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/common/input_shape.h"
#include "server/datasets/image_decoder.h"
#include "server/imaging/image_convert.h"
#include "server/imaging/normalizer.h"

namespace kaizen::serving {
namespace {

absl::Status CheckModelShape(const kaizen::v1::Model& model) {
  if (model.input_shape_size() != 3) {
    return absl::FailedPreconditionError(
        absl::StrCat("model \"", model.name(), "\" has no [C, H, W] input shape"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<torch::Tensor> PreprocessImage(absl::string_view bytes,
                                              const kaizen::v1::Model& model, int64_t max_pixels,
                                              absl::string_view what) {
  datasets::DecodeLimits limits;
  limits.max_pixels = max_pixels;
  return PreprocessImage(bytes, model, limits, what);
}

RequestImageDecoder::RequestImageDecoder(Options options, int64_t received_bytes)
    : options_(std::move(options)), budget_(options_.budget, received_bytes) {}

absl::StatusOr<torch::Tensor> RequestImageDecoder::Decode(absl::string_view bytes,
                                                          const kaizen::v1::Model& model,
                                                          absl::string_view what) {
  if (options_.cancelled && options_.cancelled()) {
    return absl::CancelledError(
        absl::StrCat(what, ": the request was cancelled; its images are no longer decoded"));
  }
  if (options_.clock->Now() >= options_.deadline) {
    return absl::DeadlineExceededError(
        absl::StrCat(what, ": the request's deadline passed while its images were decoded"));
  }
  datasets::DecodeLimits limits;
  limits.max_pixels = options_.max_pixels;
  limits.max_jpeg_scans = options_.max_jpeg_scans;
  limits.budget = &budget_;
  return PreprocessImage(bytes, model, limits, what);
}

absl::StatusOr<torch::Tensor> PreprocessImage(absl::string_view bytes,
                                              const kaizen::v1::Model& model,
                                              const datasets::DecodeLimits& limits,
                                              absl::string_view what) {
  if (absl::Status st = CheckModelShape(model); !st.ok()) return st;
  absl::StatusOr<datasets::Image> image = datasets::DecodeImage(bytes, limits);
  if (!image.ok()) {
    return absl::Status(image.status().code(), absl::StrCat(what, ": ", image.status().message()));
  }
  const int64_t C = model.input_shape(0), H = model.input_shape(1), W = model.input_shape(2);
  if (C != 1 && C != 3) {
    return absl::FailedPreconditionError(
        absl::StrCat("model \"", model.name(), "\" takes ", C, " channels; images need 1 or 3"));
  }
  torch::Tensor pixels = torch::empty({1, C, H, W}, torch::kUInt8);
  imaging::ConvertImage(image->pixels.data(), image->height, image->width, image->channels, C, H, W,
                        pixels.data_ptr<uint8_t>());
  const imaging::Normalizer normalizer(model.normalization(), C, torch::kCPU);
  return normalizer.Normalize(imaging::Normalizer::ToUnit(pixels)).squeeze(0);
}

absl::StatusOr<torch::Tensor> BatchFromFloats(const float* values, int64_t count,
                                              const std::vector<int64_t>& shape,
                                              const kaizen::v1::Model& model,
                                              absl::string_view what) {
  if (absl::Status st = CheckModelShape(model); !st.ok()) return st;
  const std::vector<int64_t> expected(model.input_shape().begin(), model.input_shape().end());
  const std::optional<int64_t> inputs = common::InputsInShape(shape, expected);
  if (!inputs.has_value() || *inputs < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " has shape ", common::ShapeText(shape), "; model \"", model.name(), "\" takes ",
        common::ShapeText(expected), " or [N, ", absl::StrJoin(expected, ", "), "]"));
  }
  const int64_t n = *inputs;
  if (n > count) {  // also keeps the product below from overflowing
    return absl::InvalidArgumentError(absl::StrCat(what, " has ", count, " values; shape ",
                                                   common::ShapeText(shape), " needs more"));
  }
  const int64_t want = n * expected[0] * expected[1] * expected[2];
  if (count != want) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has ", count, " values; shape ",
                                                   common::ShapeText(shape), " needs ", want));
  }
  for (int64_t i = 0; i < count; ++i) {
    if (!std::isfinite(values[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " holds a non-finite value (", values[i], ") at index ", i));
    }
  }
  return torch::from_blob(const_cast<float*>(values), {n, expected[0], expected[1], expected[2]},
                          torch::kFloat)
      .clone();
}

absl::StatusOr<torch::Tensor> BatchFromTensor(const kaizen::v1::FloatTensor& tensor,
                                              const kaizen::v1::Model& model,
                                              absl::string_view what) {
  return BatchFromFloats(tensor.values().data(), tensor.values_size(),
                         std::vector<int64_t>(tensor.shape().begin(), tensor.shape().end()), model,
                         what);
}

}  // namespace kaizen::serving
