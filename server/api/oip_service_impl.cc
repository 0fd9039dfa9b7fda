#include "server/api/oip_service_impl.h"

#include <torch/script.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "server/api/infer_options.h"
#include "server/api/oip_codec.h"
#include "server/api/request_scope.h"
#include "server/common/status_macros.h"
#include "server/serving/loaded_model.h"

namespace kaizen::api {

// The service name in grpc_service labels.
constexpr const char* kService = inference::GRPCInferenceService::service_full_name();

namespace {

constexpr char kServerName[] = "kaizen";
// project(VERSION) in CMakeLists.txt, the one place it is written.
constexpr char kServerVersion[] = KAIZEN_PROJECT_VERSION;
constexpr char kPlatform[] = "pytorch_torchscript";

// One ModelInfer: the form, the model, the codec's inputs, the Predictor.
absl::Status Infer(const serving::Predictor& predictor, grpc::ServerContext* context,
                   const inference::ModelInferRequest& request,
                   inference::ModelInferResponse* response) {
  RETURN_IF_ERROR(CheckOipRequestForm(request));
  ASSIGN_OR_RETURN(const int64_t version,
                   ParseOipVersion("model_version", request.model_version()));
  ASSIGN_OR_RETURN(
      std::shared_ptr<const serving::LoadedModel> model,
      predictor.Acquire(request.model_name(), version, kaizen::v1::VERSION_POLICY_UNSPECIFIED));
  if (model->is_text() && request.inputs(0).datatype() != kOipBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input \"", request.inputs(0).name(), "\": model \"", request.model_name(),
        "\" is a text model; send its texts as a BYTES tensor [N] of UTF-8 strings, not ",
        request.inputs(0).datatype()));
  }
  ASSIGN_OR_RETURN(OipInputs inputs, DecodeOipInputs(request, model->input_shape(),
                                                     predictor.options().max_request_inputs));
  ASSIGN_OR_RETURN(torch::Tensor probabilities,
                   predictor.Predict(model, inputs.inputs, InferOptionsFor(context)));
  return EncodeOipOutput(request, model->version(), std::move(probabilities), response);
}

}  // namespace

grpc::Status OipServiceImpl::ServerLive(grpc::ServerContext* context,
                                        const inference::ServerLiveRequest*,
                                        inference::ServerLiveResponse* response) {
  RequestScope scope(metrics_, kService, "ServerLive", context);
  AUTHORIZE_OR_RETURN(scope, auth_);
  response->set_live(true);
  return scope.Finish(absl::OkStatus());
}

grpc::Status OipServiceImpl::ServerReady(grpc::ServerContext* context,
                                         const inference::ServerReadyRequest*,
                                         inference::ServerReadyResponse* response) {
  RequestScope scope(metrics_, kService, "ServerReady", context);
  AUTHORIZE_OR_RETURN(scope, auth_);
  response->set_ready(models_->started());
  return scope.Finish(absl::OkStatus());
}

grpc::Status OipServiceImpl::ModelReady(grpc::ServerContext* context,
                                        const inference::ModelReadyRequest* request,
                                        inference::ModelReadyResponse* response) {
  RequestScope scope(metrics_, kService, "ModelReady", context);
  AUTHORIZE_OR_RETURN(scope, auth_);
  scope.set_resource(request->name());
  absl::StatusOr<int64_t> version = ParseOipVersion("version", request->version());
  if (version.ok()) response->set_ready(models_->IsReady(request->name(), *version));
  return scope.Finish(version.status());
}

grpc::Status OipServiceImpl::ServerMetadata(grpc::ServerContext* context,
                                            const inference::ServerMetadataRequest*,
                                            inference::ServerMetadataResponse* response) {
  RequestScope scope(metrics_, kService, "ServerMetadata", context);
  AUTHORIZE_OR_RETURN(scope, auth_);
  response->set_name(kServerName);
  response->set_version(kServerVersion);
  return scope.Finish(absl::OkStatus());
}

grpc::Status OipServiceImpl::ModelMetadata(grpc::ServerContext* context,
                                           const inference::ModelMetadataRequest* request,
                                           inference::ModelMetadataResponse* response) {
  RequestScope scope(metrics_, kService, "ModelMetadata", context);
  AUTHORIZE_OR_RETURN(scope, auth_);
  scope.set_resource(request->name());
  if (request->name().empty()) {
    return scope.Finish(absl::InvalidArgumentError("name is empty"));
  }
  absl::StatusOr<int64_t> version = ParseOipVersion("version", request->version());
  if (!version.ok()) return scope.Finish(version.status());
  // Loads the model on demand, so that metadata works before its first
  // inference and says NOT_FOUND for what cannot be served.
  absl::StatusOr<std::shared_ptr<const serving::LoadedModel>> model =
      models_->Acquire(request->name(), *version, kaizen::v1::VERSION_POLICY_UNSPECIFIED);
  if (!model.ok()) return scope.Finish(model.status());

  response->set_name(request->name());
  const std::map<std::string, std::vector<int64_t>> loaded = models_->LoadedVersions();
  if (auto it = loaded.find(request->name()); it != loaded.end()) {
    for (int64_t v : it->second) response->add_versions(absl::StrCat(v));
  }
  if (response->versions_size() == 0) response->add_versions(absl::StrCat((*model)->version()));
  response->set_platform(kPlatform);

  inference::ModelMetadataResponse::TensorMetadata* input = response->add_inputs();
  input->set_name(kOipInputName);
  input->add_shape(-1);
  if ((*model)->is_text()) {
    // One UTF-8 text per element.
    input->set_datatype(kOipBytes);
  } else {
    input->set_datatype(kOipFp32);
    for (int64_t d : (*model)->input_shape()) input->add_shape(d);
  }
  inference::ModelMetadataResponse::TensorMetadata* output = response->add_outputs();
  output->set_name(kOipOutputName);
  output->set_datatype(kOipFp32);
  output->add_shape(-1);
  output->add_shape((*model)->num_classes());
  return scope.Finish(absl::OkStatus());
}

grpc::Status OipServiceImpl::ModelInfer(grpc::ServerContext* context,
                                        const inference::ModelInferRequest* request,
                                        inference::ModelInferResponse* response) {
  RequestScope scope(metrics_, kService, "ModelInfer", context);
  AUTHORIZE_OR_RETURN(scope, auth_);
  scope.set_resource(request->model_name());
  absl::Status status = Infer(*predictor_, context, *request, response);
  if (!status.ok()) response->Clear();
  return scope.Finish(status);
}

}  // namespace kaizen::api
