#include "server/api/model_service_impl.h"

#include <fstream>

#include "absl/strings/str_cat.h"
#include "server/api/request_scope.h"
#include "server/api/upload_reactor.h"
#include "server/common/sha256.h"

namespace kaizen::api {

// The service name in grpc_service labels.
constexpr const char* kService = kaizen::v1::ModelService::service_full_name();

using kaizen::v1::Model;

namespace {
constexpr size_t kDownloadChunkBytes = 256 * 1024;
}

grpc::ServerReadReactor<kaizen::v1::UploadModelRequest>* ModelServiceImpl::UploadModel(
    grpc::CallbackServerContext* context, Model* response) {
  using Reactor = UploadReactor<kaizen::v1::UploadModelRequest, Model, store::ModelStore::Upload>;
  store::ModelStore* models = models_;
  metrics::Metrics* metrics = metrics_;
  return Reactor::Start(
      context, response, uploads_, metrics_, auth_, kService, "UploadModel",
      [models](const kaizen::v1::UploadModelHeader& header) { return models->BeginUpload(header); },
      [metrics](const Model&, int64_t bytes) { metrics->AddUploadBytes("model", bytes); });
}

grpc::Status ModelServiceImpl::GetModel(grpc::ServerContext* context,
                                        const kaizen::v1::GetModelRequest* request,
                                        Model* response) {
  RequestScope scope(metrics_, kService, "GetModel", context);
  AUTHORIZE_OR_RETURN(scope, auth_);
  scope.set_resource(request->name());
  absl::StatusOr<Model> m = models_->Get(request->name(), request->version());
  if (m.ok()) *response = *std::move(m);
  return scope.Finish(m.status());
}

grpc::Status ModelServiceImpl::ListModels(grpc::ServerContext* context,
                                          const kaizen::v1::ListModelsRequest* request,
                                          kaizen::v1::ListModelsResponse* response) {
  RequestScope scope(metrics_, kService, "ListModels", context);
  AUTHORIZE_OR_RETURN(scope, auth_);
  auto list = models_->List(*request);
  if (list.ok()) *response = *std::move(list);
  return scope.Finish(list.status());
}

grpc::Status ModelServiceImpl::DeleteModel(grpc::ServerContext* context,
                                           const kaizen::v1::DeleteModelRequest* request,
                                           kaizen::v1::DeleteModelResponse*) {
  RequestScope scope(metrics_, kService, "DeleteModel", context);
  AUTHORIZE_OR_RETURN(scope, auth_);
  scope.set_resource(request->name());
  if (request->version() < 0) {
    return scope.Finish(absl::InvalidArgumentError(
        absl::StrCat("version is ", request->version(), "; it must be >= 0")));
  }
  return scope.Finish(models_->Delete(request->name(), request->version()));
}

grpc::Status ModelServiceImpl::DownloadModel(
    grpc::ServerContext* context, const kaizen::v1::DownloadModelRequest* request,
    grpc::ServerWriter<kaizen::v1::DownloadModelResponse>* writer) {
  RequestScope scope(metrics_, kService, "DownloadModel", context);
  AUTHORIZE_OR_RETURN(scope, auth_);
  scope.set_resource(request->name());
  absl::StatusOr<store::ModelStore::File> file =
      models_->OpenFile(request->name(), request->version());
  if (!file.ok()) return scope.Finish(file.status());
  std::ifstream in(file->path(), std::ios::binary);
  if (!in) {
    return scope.Finish(absl::InternalError(
        absl::StrCat("cannot open the file of model \"", request->name(), "\"")));
  }
  kaizen::v1::DownloadModelResponse msg;
  *msg.mutable_model() = file->model();
  if (!writer->Write(msg)) return scope.Finish(absl::CancelledError("client went away"));
  common::Sha256 hasher;
  std::string buf(kDownloadChunkBytes, '\0');
  int64_t sent = 0;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const std::streamsize n = in.gcount();
    if (n <= 0) break;
    hasher.Update(buf.data(), static_cast<size_t>(n));
    msg.set_chunk(buf.data(), static_cast<size_t>(n));
    if (!writer->Write(msg)) return scope.Finish(absl::CancelledError("client went away"));
    sent += n;
  }
  if (in.bad()) return scope.Finish(absl::InternalError("read error while streaming the model"));
  // The trailer lets the client check the transfer; the file itself is
  // checked against what was recorded when it was stored, so that a file
  // damaged on disk is not handed out as good (the client sees the error,
  // with no trailer, instead).
  const std::string digest = hasher.HexDigest();
  const kaizen::v1::Model& model = file->model();
  if ((!model.sha256().empty() && digest != model.sha256()) ||
      (model.size_bytes() > 0 && sent != model.size_bytes())) {
    return scope.Finish(absl::DataLossError(
        absl::StrCat("the stored file of model \"", model.name(), "\" version ", model.version(),
                     " is damaged: ", sent, " bytes with SHA-256 ", digest, ", recorded ",
                     model.size_bytes(), " bytes with SHA-256 ", model.sha256())));
  }
  msg.set_sha256(digest);
  writer->Write(msg);
  metrics_->AddDownloadBytes(sent);
  return scope.Finish(absl::OkStatus());
}

grpc::Status ModelServiceImpl::EvaluateModel(grpc::ServerContext* context,
                                             const kaizen::v1::EvaluateModelRequest* request,
                                             kaizen::v1::Evaluation* response) {
  RequestScope scope(metrics_, kService, "EvaluateModel", context);
  AUTHORIZE_OR_RETURN(scope, auth_);
  scope.set_resource(request->name());
  absl::StatusOr<kaizen::v1::Evaluation> e =
      evaluator_->Evaluate(*request, [context] { return context->IsCancelled(); });
  if (e.ok()) *response = *std::move(e);
  return scope.Finish(e.status());
}

}  // namespace kaizen::api
