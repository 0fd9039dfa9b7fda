#include "server/api/inference_service_impl.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "server/api/request_scope.h"
#include "server/common/status_macros.h"
#include "server/serving/preprocess.h"

namespace kaizen::api {

// The service name in grpc_service labels.
constexpr const char* kService = kaizen::v1::InferenceService::service_full_name();

serving::InferOptions InferOptionsFor(grpc::ServerContext* context) {
  serving::InferOptions o;
  const auto deadline = context->deadline();
  if (deadline != std::chrono::system_clock::time_point::max())
    o.deadline = absl::FromChrono(deadline);
  o.cancelled = [context] { return context->IsCancelled(); };
  return o;
}

grpc::Status InferenceServiceImpl::Predict(grpc::ServerContext* context,
                                           const kaizen::v1::PredictRequest* request,
                                           kaizen::v1::PredictResponse* response) {
  RequestScope scope(metrics_, kService, "Predict", context);
  AUTHORIZE_OR_RETURN(scope, auth_);
  scope.set_resource(request->model());
  return scope.Finish(DoPredict(context, *request, response));
}

absl::Status InferenceServiceImpl::DoPredict(grpc::ServerContext* context,
                                             const kaizen::v1::PredictRequest& request,
                                             kaizen::v1::PredictResponse* response) {
  if (request.model().empty()) return absl::InvalidArgumentError("model is empty; name a model");
  if (request.inputs_size() == 0) {
    return absl::InvalidArgumentError("inputs is empty; send at least one image or tensor");
  }
  const int max_inputs = models_->options().max_request_inputs;
  if (request.inputs_size() > max_inputs) {
    return absl::InvalidArgumentError(absl::StrCat(request.inputs_size(),
                                                   " inputs in one request exceed the limit of ",
                                                   max_inputs, "; split the batch"));
  }
  if (request.top_k() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k is ", request.top_k(), "; it must be >= 0"));
  }
  ASSIGN_OR_RETURN(std::shared_ptr<const serving::LoadedModel> model,
                   models_->Acquire(request.model(), request.version(), request.policy()));
  const kaizen::v1::Model& meta = model->metadata();
  serving::InferOptions options = InferOptionsFor(context);
  int64_t encoded_bytes = 0;
  for (const kaizen::v1::PredictInput& in : request.inputs()) {
    encoded_bytes += static_cast<int64_t>(in.encoded_image().size());
  }
  serving::RequestImageDecoder decoder =
      models_->NewImageDecoder(options.deadline, options.cancelled, encoded_bytes);
  std::vector<torch::Tensor> inputs;
  inputs.reserve(request.inputs_size());
  for (int i = 0; i < request.inputs_size(); ++i) {
    const kaizen::v1::PredictInput& in = request.inputs(i);
    const std::string what = absl::StrCat("inputs[", i, "]");
    switch (in.data_case()) {
      case kaizen::v1::PredictInput::kEncodedImage: {
        ASSIGN_OR_RETURN(torch::Tensor x, decoder.Decode(in.encoded_image(), meta, what));
        inputs.push_back(x.unsqueeze(0));
        break;
      }
      case kaizen::v1::PredictInput::kTensor: {
        ASSIGN_OR_RETURN(torch::Tensor x, serving::BatchFromTensor(in.tensor(), meta, what));
        if (x.size(0) != 1) {
          return absl::InvalidArgumentError(absl::StrCat(
              what, " holds ", x.size(0), " inputs; each PredictInput is one input of shape [",
              meta.input_shape(0), ", ", meta.input_shape(1), ", ", meta.input_shape(2), "]"));
        }
        inputs.push_back(std::move(x));
        break;
      }
      default:
        return absl::InvalidArgumentError(
            absl::StrCat(what, " has neither encoded_image nor tensor"));
    }
  }
  options.disable_batching = request.disable_batching();
  ASSIGN_OR_RETURN(torch::Tensor probs, models_->Infer(model, torch::cat(inputs), options));

  c10::InferenceMode guard;
  const int64_t k = std::min<int64_t>(std::max(1, request.top_k()), model->num_classes());
  const auto [scores, indices] = probs.topk(k, /*dim=*/1);
  const auto s = scores.accessor<float, 2>();
  const auto ix = indices.accessor<int64_t, 2>();
  response->set_model(model->name());
  response->set_version(model->version());
  for (int64_t i = 0; i < probs.size(0); ++i) {
    kaizen::v1::Prediction* p = response->add_predictions();
    for (int64_t j = 0; j < k; ++j) {
      kaizen::v1::ClassScore* c = p->add_classes();
      c->set_index(static_cast<int32_t>(ix[i][j]));
      c->set_label(model->Label(ix[i][j]));
      c->set_probability(s[i][j]);
    }
  }
  return absl::OkStatus();
}

}  // namespace kaizen::api
