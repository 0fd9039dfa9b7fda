// Predictor: the one protocol-neutral way into inference. Both gRPC services
// (kaizen.v1.InferenceService and the Open Inference Protocol) translate
// their requests into ModelInputs, and the Predictor checks them against the
// model and the limits, preprocesses them into one batch under the caller's
// deadline and cancellation, and runs it through ModelServer's batcher.
// Owns nothing; the ModelServer outlives it.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "kaizen/v1/model_service.pb.h"
#include "server/datasets/decode_budget.h"
#include "server/serving/loaded_model.h"
#include "server/serving/model_batcher.h"
#include "server/serving/model_server.h"

namespace kaizen::serving {

// One input as a protocol carries it, before any check against the model.
// Views into the request: the request outlives the Predict() call.
struct ModelInput {
  enum class Kind {
    kNone,          // the protocol's input held no data
    kEncodedImage,  // one JPEG or PNG image
    kTensor,        // float values of shape [C, H, W] or [N, C, H, W]
    kText,          // one text (UTF-8), for text models
  };
  Kind kind = Kind::kNone;
  // Names the input at the start of messages: "inputs[3]", "input \"x\"[2]".
  std::string what;
  // kEncodedImage: the encoded bytes.
  absl::string_view encoded_image;
  // kEncodedImage: an element of a protocol's BYTES tensor (the Open
  // Inference Protocol), which a text model reads as UTF-8 text.
  bool bytes_element = false;
  // kText: the text.
  absl::string_view text;
  // kTensor: the shape and its row-major values.
  std::vector<int64_t> shape;
  absl::Span<const float> values;
  // kTensor: the protocol sends one input per tensor (Predict's
  // PredictInput), so a tensor holding N != 1 inputs is refused.
  bool single = false;
};

class Predictor {
 public:
  // The limits on one request.
  struct Options {
    // Inputs accepted in one request.
    int max_request_inputs = 256;
    // Largest image accepted, width * height.
    int64_t max_image_pixels = 25'000'000;
    // Most scans in one progressive JPEG.
    int max_jpeg_scans = 100;
    // Decoded bytes the images of one request may produce.
    datasets::DecodeBudget::Options decode_budget{/*max_bytes=*/int64_t{1} << 30};
  };

  // The limits that `server` was configured with.
  static Options OptionsFor(const ModelServer::Options& server);

  Predictor(ModelServer* models, Options options) : models_(models), options_(options) {}

  const Options& options() const { return options_; }

  // InvalidArgument when `n` inputs exceed max_request_inputs; checked
  // before the model is looked up.
  absl::Status CheckInputCount(int64_t n) const;

  // The version that answers (see ModelServer::Acquire): NotFound,
  // FailedPrecondition or Internal.
  absl::StatusOr<std::shared_ptr<const LoadedModel>> Acquire(
      const std::string& name, int64_t version, kaizen::v1::VersionPolicy policy) const;

  // Preprocesses `inputs` for `model` (images decoded under the limits,
  // tensors checked against its [C, H, W]; for a text model, texts tokenised
  // as it was trained, each batch padded to its longest text) into one
  // batch, in order, and runs it. Returns probabilities [N, classes]. InvalidArgument /
  // FailedPrecondition / ResourceExhausted naming the input, DeadlineExceeded or Cancelled when
  // `call`'s deadline passes or its caller goes away (before each image and
  // before compute), ResourceExhausted when the model's queue is full.
  absl::StatusOr<torch::Tensor> Predict(const std::shared_ptr<const LoadedModel>& model,
                                        absl::Span<const ModelInput> inputs,
                                        const InferOptions& call) const;

 private:
  // The inputs preprocessed, each float [n, C, H, W].
  absl::StatusOr<std::vector<torch::Tensor>> Preprocess(const LoadedModel& model,
                                                        absl::Span<const ModelInput> inputs,
                                                        const InferOptions& call) const;

  // A text model's inputs tokenised, each int64 [1, length] (see
  // LoadedModel::EncodeText).
  absl::StatusOr<std::vector<torch::Tensor>> PreprocessText(
      const LoadedModel& model, absl::Span<const ModelInput> inputs) const;

  ModelServer* models_;
  Options options_;
};

}  // namespace kaizen::serving
