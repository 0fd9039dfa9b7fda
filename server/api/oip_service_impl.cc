#include "server/api/oip_service_impl.h"

#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/api/request_scope.h"
#include "server/common/oip_tensor.h"
#include "server/common/status_macros.h"
#include "server/serving/loaded_model.h"
#include "server/serving/preprocess.h"

namespace kaizen::api {

// The service name in grpc_service labels.
constexpr const char* kService = inference::GRPCInferenceService::service_full_name();

namespace {

constexpr char kServerName[] = "kaizen";
// project(VERSION) in CMakeLists.txt, the one place it is written.
constexpr char kServerVersion[] = KAIZEN_PROJECT_VERSION;
constexpr char kPlatform[] = "pytorch_torchscript";
constexpr char kInputName[] = "input";
constexpr char kOutputName[] = "probabilities";
constexpr char kFp32[] = "FP32";
constexpr char kBytes[] = "BYTES";

using inference::ModelInferRequest;
using inference::ModelInferResponse;

// How messages name the request's input: input "NAME".
std::string InputWhat(const ModelInferRequest::InferInputTensor& input) {
  return absl::StrCat("input \"", absl::CHexEscape(input.name()), "\"");
}

template <typename Container>
std::string ShapeString(const Container& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// "" -> 0, the version the model's policy picks; decimal digits -> that
// version (>= 1). `field` names the request field in the message.
absl::StatusOr<int64_t> ParseVersion(absl::string_view field, absl::string_view text) {
  if (text.empty()) return 0;
  int64_t version = 0;
  const bool digits =
      std::all_of(text.begin(), text.end(), [](char c) { return absl::ascii_isdigit(c); });
  if (!digits || !absl::SimpleAtoi(text, &version) || version < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " \"", absl::CHexEscape(text),
                     "\" is not a model version; expected \"\" (the version the model's policy "
                     "picks) or a number >= 1"));
  }
  return version;
}

absl::Time DeadlineOf(const grpc::ServerContext& context) {
  const std::chrono::system_clock::time_point deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

// Checks what needs no model: one input of a supported datatype, its values
// in one place, and only outputs the model has.
absl::Status CheckRequestForm(const ModelInferRequest& request) {
  if (request.model_name().empty()) return absl::InvalidArgumentError("model_name is empty");
  if (request.inputs_size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat("the request has ", request.inputs_size(),
                                                   " input tensors; expected exactly one (\"",
                                                   kInputName, "\")"));
  }
  const ModelInferRequest::InferInputTensor& input = request.inputs(0);
  const std::string what = InputWhat(input);
  if (request.raw_input_contents_size() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("raw_input_contents has ", request.raw_input_contents_size(),
                     " entries for 1 input tensor; expected one entry per input"));
  }
  if (request.raw_input_contents_size() == 1 && input.has_contents()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what,
                     " sets contents while the request also has raw_input_contents; the "
                     "protocol allows one or the other"));
  }
  if (input.datatype() != kFp32 && input.datatype() != kBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " has datatype \"", absl::CHexEscape(input.datatype()), "\"; expected ",
                     kFp32, " (preprocessed inputs, shape [N, C, H, W] or [C, H, W]) or ", kBytes,
                     " (encoded JPEG or PNG images, shape [N])"));
  }
  for (const auto& output : request.outputs()) {
    if (output.name() != kOutputName) {
      return absl::InvalidArgumentError(
          absl::StrCat("requested output \"", absl::CHexEscape(output.name()),
                       "\" does not exist; the model has one output, \"", kOutputName, "\""));
    }
  }
  return absl::OkStatus();
}

// FP32 [N, C, H, W] or [C, H, W] -> float [N, C, H, W].
absl::StatusOr<torch::Tensor> BatchFromFp32(const ModelInferRequest& request,
                                            const serving::LoadedModel& model, int max_inputs) {
  const ModelInferRequest::InferInputTensor& input = request.inputs(0);
  const std::string what = InputWhat(input);
  const std::vector<int64_t> shape(input.shape().begin(), input.shape().end());
  const auto& contents = input.contents().fp32_contents();
  ASSIGN_OR_RETURN(
      common::Fp32Batch batch,
      common::DecodeOipFp32(
          shape, model.input_shape(), max_inputs,
          request.raw_input_contents_size() == 1 ? &request.raw_input_contents(0) : nullptr,
          absl::MakeConstSpan(contents.data(), contents.size()), what));
  return serving::BatchFromFloats(batch.values.data(), static_cast<int64_t>(batch.values.size()),
                                  shape, model.metadata(), what);
}

// BYTES [N] of encoded images -> float [N, C, H, W].
absl::StatusOr<torch::Tensor> BatchFromImages(const ModelInferRequest& request,
                                              const serving::LoadedModel& model, int max_inputs,
                                              const serving::ModelServer& models,
                                              grpc::ServerContext* context) {
  const ModelInferRequest::InferInputTensor& input = request.inputs(0);
  const std::string what = InputWhat(input);
  const std::string given = ShapeString(input.shape());
  if (input.shape_size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has shape ", given, "; expected [N] (",
                                                   kBytes, ", N encoded JPEG or PNG images)"));
  }
  const int64_t n = input.shape(0);
  RETURN_IF_ERROR(common::CheckOipBatchSize(n, max_inputs, what, given));

  std::vector<absl::string_view> elements;
  if (request.raw_input_contents_size() == 1) {
    ASSIGN_OR_RETURN(elements, common::SplitOipRawBytes(request.raw_input_contents(0), what));
    if (static_cast<int64_t>(elements.size()) != n) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": raw_input_contents[0] holds ",
                                                     elements.size(), " elements; shape ", given,
                                                     " needs ", n));
    }
  } else {
    const auto& contents = input.contents().bytes_contents();
    if (contents.size() != n) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": contents.bytes_contents holds ",
                                                     contents.size(), " elements; shape ", given,
                                                     " needs ", n));
    }
    elements.assign(contents.begin(), contents.end());
  }

  int64_t encoded_bytes = 0;
  for (absl::string_view element : elements) encoded_bytes += static_cast<int64_t>(element.size());
  serving::RequestImageDecoder decoder = models.NewImageDecoder(
      DeadlineOf(*context), [context] { return context->IsCancelled(); }, encoded_bytes);
  std::vector<torch::Tensor> images;
  images.reserve(elements.size());
  for (size_t i = 0; i < elements.size(); ++i) {
    ASSIGN_OR_RETURN(torch::Tensor image, decoder.Decode(elements[i], model.metadata(),
                                                         absl::StrCat(what, "[", i, "]")));
    images.push_back(std::move(image));
  }
  try {
    return torch::stack(images);
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat(what, ": cannot batch the decoded images: ", e.what_without_backtrace()));
  }
}

absl::Status Infer(serving::ModelServer& models, grpc::ServerContext* context,
                   const ModelInferRequest& request, ModelInferResponse* response) {
  RETURN_IF_ERROR(CheckRequestForm(request));
  ASSIGN_OR_RETURN(const int64_t version, ParseVersion("model_version", request.model_version()));
  ASSIGN_OR_RETURN(
      std::shared_ptr<const serving::LoadedModel> model,
      models.Acquire(request.model_name(), version, kaizen::v1::VERSION_POLICY_UNSPECIFIED));

  const int max_inputs = models.options().max_request_inputs;
  absl::StatusOr<torch::Tensor> batch =
      request.inputs(0).datatype() == kFp32
          ? BatchFromFp32(request, *model, max_inputs)
          : BatchFromImages(request, *model, max_inputs, models, context);
  if (!batch.ok()) return batch.status();

  serving::ModelServer::InferOptions options;
  options.deadline = DeadlineOf(*context);
  options.cancelled = [context] { return context->IsCancelled(); };
  ASSIGN_OR_RETURN(torch::Tensor probabilities, models.Infer(model, *std::move(batch), options));

  try {
    probabilities = probabilities.to(torch::kCPU, torch::kFloat).contiguous();
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("cannot read the model's output: ", e.what_without_backtrace()));
  }
  if (probabilities.dim() != 2) {
    return absl::InternalError(absl::StrCat("the model answered a tensor of shape ",
                                            ShapeString(probabilities.sizes()),
                                            "; expected [N, classes]"));
  }
  response->set_model_name(request.model_name());
  response->set_model_version(absl::StrCat(model->version()));
  response->set_id(request.id());
  ModelInferResponse::InferOutputTensor* output = response->add_outputs();
  output->set_name(kOutputName);
  output->set_datatype(kFp32);
  output->add_shape(probabilities.size(0));
  output->add_shape(probabilities.size(1));
  response->add_raw_output_contents(reinterpret_cast<const char*>(probabilities.data_ptr<float>()),
                                    static_cast<size_t>(probabilities.numel()) * sizeof(float));
  return absl::OkStatus();
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
  absl::StatusOr<int64_t> version = ParseVersion("version", request->version());
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
  absl::StatusOr<int64_t> version = ParseVersion("version", request->version());
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
  input->set_name(kInputName);
  input->set_datatype(kFp32);
  input->add_shape(-1);
  for (int64_t d : (*model)->input_shape()) input->add_shape(d);
  inference::ModelMetadataResponse::TensorMetadata* output = response->add_outputs();
  output->set_name(kOutputName);
  output->set_datatype(kFp32);
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
  absl::Status status = Infer(*models_, context, *request, response);
  if (!status.ok()) response->Clear();
  return scope.Finish(status);
}

}  // namespace kaizen::api
