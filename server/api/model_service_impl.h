// kaizen.v1.ModelService: translates requests and calls the ModelStore.
// UploadModel runs on the callback API (see UploadReactor) so that a slow or
// silent client holds no thread; the other RPCs are sync.
#pragma once

#include "kaizen/v1/model_service.grpc.pb.h"
#include "server/api/upload_runner.h"
#include "server/auth/authenticator.h"
#include "server/jobs/model_evaluator.h"
#include "server/metrics/metrics.h"
#include "server/store/model_store.h"

namespace kaizen::api {

class ModelServiceImpl final : public kaizen::v1::ModelService::WithCallbackMethod_UploadModel<
                                   kaizen::v1::ModelService::Service> {
 public:
  ModelServiceImpl(store::ModelStore* models, jobs::ModelEvaluator* evaluator,
                   UploadRunner* uploads, metrics::Metrics* metrics,
                   const auth::Authenticator* auth)
      : models_(models), evaluator_(evaluator), uploads_(uploads), metrics_(metrics), auth_(auth) {}

  grpc::ServerReadReactor<kaizen::v1::UploadModelRequest>* UploadModel(
      grpc::CallbackServerContext* context, kaizen::v1::Model* response) override;
  grpc::Status GetModel(grpc::ServerContext* context, const kaizen::v1::GetModelRequest* request,
                        kaizen::v1::Model* response) override;
  grpc::Status ListModels(grpc::ServerContext* context,
                          const kaizen::v1::ListModelsRequest* request,
                          kaizen::v1::ListModelsResponse* response) override;
  grpc::Status DeleteModel(grpc::ServerContext* context,
                           const kaizen::v1::DeleteModelRequest* request,
                           kaizen::v1::DeleteModelResponse* response) override;
  grpc::Status DownloadModel(
      grpc::ServerContext* context, const kaizen::v1::DownloadModelRequest* request,
      grpc::ServerWriter<kaizen::v1::DownloadModelResponse>* writer) override;
  grpc::Status EvaluateModel(grpc::ServerContext* context,
                             const kaizen::v1::EvaluateModelRequest* request,
                             kaizen::v1::Evaluation* response) override;

 private:
  store::ModelStore* models_;
  jobs::ModelEvaluator* evaluator_;
  UploadRunner* uploads_;
  metrics::Metrics* metrics_;
  const auth::Authenticator* auth_;
};

}  // namespace kaizen::api
