// Turns Predict inputs into the float batch a model expects, exactly as the
// trainer prepared its training images: decode, convert channels, bilinear
// resize to the model's input size, scale to [0, 1], normalise with the
// model's mean/std.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "kaizen/v1/common.pb.h"
#include "kaizen/v1/model_service.pb.h"
#include "server/common/clock.h"
#include "server/datasets/decode_budget.h"
#include "server/datasets/image_decoder.h"

namespace kaizen::serving {

// A JPEG or PNG of any size -> float [C, H, W] normalised for `model`.
// InvalidArgument for undecodable bytes, FailedPrecondition for a format
// other than JPEG/PNG, ResourceExhausted over `max_pixels`; `what` (e.g.
// "inputs[3]") starts every message.
absl::StatusOr<torch::Tensor> PreprocessImage(absl::string_view bytes,
                                              const kaizen::v1::Model& model, int64_t max_pixels,
                                              absl::string_view what);

// The same under `limits` (pixels, JPEG scans, a budget); ResourceExhausted
// also for too many scans or an exhausted budget.
absl::StatusOr<torch::Tensor> PreprocessImage(absl::string_view bytes,
                                              const kaizen::v1::Model& model,
                                              const datasets::DecodeLimits& limits,
                                              absl::string_view what);

// Preprocesses the encoded images of one Predict or ModelInfer request under
// one decode budget (its ratio taken to the request's encoded bytes), and
// checks the caller's deadline and cancellation before each image, so that
// an abandoned request stops decoding and a hostile one stops at its budget.
class RequestImageDecoder {
 public:
  struct Options {
    // Largest image, width * height.
    int64_t max_pixels = 25'000'000;
    // Most scans in one progressive JPEG.
    int max_jpeg_scans = 100;
    // Decoded bytes for all the request's images together.
    datasets::DecodeBudget::Options budget;
    // The caller's deadline; DEADLINE_EXCEEDED before the next image after it.
    absl::Time deadline = absl::InfiniteFuture();
    // Polled before each image; true stops with CANCELLED.
    std::function<bool()> cancelled;
    // What `deadline` is compared with.
    const common::Clock* clock = common::Clock::Real();
  };

  // `received_bytes`: the encoded bytes of the request's images.
  RequestImageDecoder(Options options, int64_t received_bytes);

  // PreprocessImage under the request's limits; also DeadlineExceeded or
  // Cancelled, and ResourceExhausted once the budget is spent. `what`
  // ("inputs[3]") starts every message.
  absl::StatusOr<torch::Tensor> Decode(absl::string_view bytes, const kaizen::v1::Model& model,
                                       absl::string_view what);

 private:
  Options options_;
  datasets::DecodeBudget budget_;
};

// Checks that `values` holds inputs of `model`'s shape [C, H, W]: `shape` is
// [C, H, W] (one input) or [N, C, H, W] (N >= 1 inputs), `count` equals its
// product and every value is finite. Returns a float [N, C, H, W] copy.
// InvalidArgument naming `what`, the shape given and the shape expected.
absl::StatusOr<torch::Tensor> BatchFromFloats(const float* values, int64_t count,
                                              const std::vector<int64_t>& shape,
                                              const kaizen::v1::Model& model,
                                              absl::string_view what);

// The same for a FloatTensor message.
absl::StatusOr<torch::Tensor> BatchFromTensor(const kaizen::v1::FloatTensor& tensor,
                                              const kaizen::v1::Model& model,
                                              absl::string_view what);

}  // namespace kaizen::serving
