#include "server/serving/predictor.h"

#include <torch/torch.h>

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/serving/preprocess.h"

namespace kaizen::serving {
namespace {

// A tensor input checked against the model: float [n, C, H, W]; exactly one
// input when the protocol sends one per tensor.
absl::StatusOr<torch::Tensor> TensorInput(const ModelInput& in, const kaizen::v1::Model& meta) {
  ASSIGN_OR_RETURN(torch::Tensor x,
                   BatchFromFloats(in.values.data(), static_cast<int64_t>(in.values.size()),
                                   in.shape, meta, in.what));
  if (in.single && x.size(0) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        in.what, " holds ", x.size(0), " inputs; each PredictInput is one input of shape [",
        meta.input_shape(0), ", ", meta.input_shape(1), ", ", meta.input_shape(2), "]"));
  }
  return x;
}

}  // namespace

Predictor::Options Predictor::OptionsFor(const ModelServer::Options& server) {
  Options o;
  o.max_request_inputs = server.max_request_inputs;
  o.max_image_pixels = server.max_image_pixels;
  o.max_jpeg_scans = server.max_jpeg_scans;
  o.decode_budget = server.decode_budget;
  return o;
}

absl::Status Predictor::CheckInputCount(int64_t n) const {
  if (n > options_.max_request_inputs) {
    return absl::InvalidArgumentError(absl::StrCat(n, " inputs in one request exceed the limit of ",
                                                   options_.max_request_inputs,
                                                   "; split the batch"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const LoadedModel>> Predictor::Acquire(
    const std::string& name, int64_t version, kaizen::v1::VersionPolicy policy) const {
  return models_->Acquire(name, version, policy);
}

absl::StatusOr<std::vector<torch::Tensor>> Predictor::PreprocessText(
    const LoadedModel& model, absl::Span<const ModelInput> inputs) const {
  std::vector<torch::Tensor> rows;
  rows.reserve(inputs.size());
  for (const ModelInput& in : inputs) {
    absl::string_view text;
    if (in.kind == ModelInput::Kind::kText) {
      text = in.text;
    } else if (in.kind == ModelInput::Kind::kEncodedImage && in.bytes_element) {
      text = in.encoded_image;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          in.what, ": model \"", model.name(), "\" version ", model.version(),
          " is a text model; send the text (Predict: inputs[i].text; the Open Inference "
          "Protocol: a BYTES tensor of UTF-8 texts)"));
    }
    absl::StatusOr<torch::Tensor> ids = model.EncodeText(text);
    if (!ids.ok()) {
      return absl::Status(ids.status().code(), absl::StrCat(in.what, ": ", ids.status().message()));
    }
    rows.push_back(*std::move(ids));
  }
  return rows;
}

absl::StatusOr<std::vector<torch::Tensor>> Predictor::Preprocess(
    const LoadedModel& model, absl::Span<const ModelInput> inputs, const InferOptions& call) const {
  int64_t encoded_bytes = 0;
  for (const ModelInput& in : inputs) {
    encoded_bytes += static_cast<int64_t>(in.encoded_image.size());
  }
  RequestImageDecoder::Options o;
  o.max_pixels = options_.max_image_pixels;
  o.max_jpeg_scans = options_.max_jpeg_scans;
  o.budget = options_.decode_budget;
  o.deadline = call.deadline;
  o.cancelled = call.cancelled;
  RequestImageDecoder decoder(std::move(o), encoded_bytes);
  std::vector<torch::Tensor> batches;
  batches.reserve(inputs.size());
  for (const ModelInput& in : inputs) {
    switch (in.kind) {
      case ModelInput::Kind::kText:
        return absl::InvalidArgumentError(
            absl::StrCat(in.what, ": model \"", model.name(), "\" version ", model.version(),
                         " takes images; a text goes to a text model"));
      case ModelInput::Kind::kEncodedImage: {
        ASSIGN_OR_RETURN(torch::Tensor x,
                         decoder.Decode(in.encoded_image, model.metadata(), in.what));
        batches.push_back(x.unsqueeze(0));
        break;
      }
      case ModelInput::Kind::kTensor: {
        ASSIGN_OR_RETURN(torch::Tensor x, TensorInput(in, model.metadata()));
        batches.push_back(std::move(x));
        break;
      }
      case ModelInput::Kind::kNone:
        return absl::InvalidArgumentError(
            absl::StrCat(in.what, " has neither encoded_image nor tensor"));
    }
  }
  return batches;
}

absl::StatusOr<torch::Tensor> Predictor::Predict(const std::shared_ptr<const LoadedModel>& model,
                                                 absl::Span<const ModelInput> inputs,
                                                 const InferOptions& call) const {
  if (inputs.empty())
    return absl::InvalidArgumentError("the batch is empty; send at least one input");
  ASSIGN_OR_RETURN(std::vector<torch::Tensor> batches, model->is_text()
                                                           ? PreprocessText(*model, inputs)
                                                           : Preprocess(*model, inputs, call));
  torch::Tensor batch;
  try {
    batch = JoinBatches(batches);
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("cannot batch the preprocessed inputs: ", e.what_without_backtrace()));
  }
  return models_->Infer(model, std::move(batch), call);
}

}  // namespace kaizen::serving
