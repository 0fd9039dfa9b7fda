#include "server/api/inference_service_impl.h"

#include <torch/torch.h>

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/api/infer_options.h"
#include "server/api/request_scope.h"
#include "server/common/status_macros.h"

namespace kaizen::api {

// The service name in grpc_service labels.
constexpr const char* kService = kaizen::v1::InferenceService::service_full_name();

namespace {

// Checks what needs no model: a model, 1..max inputs and top_k >= 0.
absl::Status CheckRequestForm(const kaizen::v1::PredictRequest& request,
                              const serving::Predictor& predictor) {
  if (request.model().empty()) return absl::InvalidArgumentError("model is empty; name a model");
  if (request.inputs_size() == 0) {
    return absl::InvalidArgumentError("inputs is empty; send at least one image or tensor");
  }
  RETURN_IF_ERROR(predictor.CheckInputCount(request.inputs_size()));
  if (request.top_k() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k is ", request.top_k(), "; it must be >= 0"));
  }
  return absl::OkStatus();
}

// Each PredictInput as one ModelInput "inputs[i]", viewing the request.
std::vector<serving::ModelInput> ModelInputs(const kaizen::v1::PredictRequest& request) {
  std::vector<serving::ModelInput> inputs(request.inputs_size());
  for (int i = 0; i < request.inputs_size(); ++i) {
    const kaizen::v1::PredictInput& in = request.inputs(i);
    serving::ModelInput& out = inputs[i];
    out.what = absl::StrCat("inputs[", i, "]");
    if (in.data_case() == kaizen::v1::PredictInput::kEncodedImage) {
      out.kind = serving::ModelInput::Kind::kEncodedImage;
      out.encoded_image = in.encoded_image();
    } else if (in.data_case() == kaizen::v1::PredictInput::kTensor) {
      out.kind = serving::ModelInput::Kind::kTensor;
      out.shape.assign(in.tensor().shape().begin(), in.tensor().shape().end());
      out.values = absl::MakeConstSpan(in.tensor().values().data(), in.tensor().values_size());
      out.single = true;
    } else if (in.data_case() == kaizen::v1::PredictInput::kText) {
      out.kind = serving::ModelInput::Kind::kText;
      out.text = in.text();
    }
  }
  return inputs;
}

// The top_k (at least 1) classes of each row of `probs`.
void WriteTopK(const serving::LoadedModel& model, const torch::Tensor& probs, int top_k,
               kaizen::v1::PredictResponse* response) {
  c10::InferenceMode guard;
  const int64_t k = std::min<int64_t>(std::max(1, top_k), model.num_classes());
  const auto [scores, indices] = probs.topk(k, /*dim=*/1);
  const auto s = scores.accessor<float, 2>();
  const auto ix = indices.accessor<int64_t, 2>();
  response->set_model(model.name());
  response->set_version(model.version());
  for (int64_t i = 0; i < probs.size(0); ++i) {
    kaizen::v1::Prediction* p = response->add_predictions();
    for (int64_t j = 0; j < k; ++j) {
      kaizen::v1::ClassScore* c = p->add_classes();
      c->set_index(static_cast<int32_t>(ix[i][j]));
      c->set_label(model.Label(ix[i][j]));
      c->set_probability(s[i][j]);
    }
  }
}

}  // namespace

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
  RETURN_IF_ERROR(CheckRequestForm(request, *predictor_));
  ASSIGN_OR_RETURN(std::shared_ptr<const serving::LoadedModel> model,
                   predictor_->Acquire(request.model(), request.version(), request.policy()));
  serving::InferOptions call = InferOptionsFor(context);
  call.disable_batching = request.disable_batching();
  ASSIGN_OR_RETURN(torch::Tensor probs, predictor_->Predict(model, ModelInputs(request), call));
  WriteTopK(*model, probs, request.top_k(), response);
  return absl::OkStatus();
}

}  // namespace kaizen::api
