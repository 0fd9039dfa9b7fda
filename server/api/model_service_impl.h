// kaizen.v1.ModelService: translates requests and calls the ModelStore.
#pragma once

#include "kaizen/v1/model_service.grpc.pb.h"
#include "server/metrics/metrics.h"
#include "server/store/model_store.h"

namespace kaizen::api {

class ModelServiceImpl final : public kaizen::v1::ModelService::Service {
 public:
  ModelServiceImpl(store::ModelStore* models, metrics::Metrics* metrics)
      : models_(models), metrics_(metrics) {}

  grpc::Status UploadModel(grpc::ServerContext* context,
                           grpc::ServerReader<kaizen::v1::UploadModelRequest>* reader,
                           kaizen::v1::Model* response) override;
  grpc::Status GetModel(grpc::ServerContext* context, const kaizen::v1::GetModelRequest* request,
                        kaizen::v1::Model* response) override;
  grpc::Status ListModels(grpc::ServerContext* context, const kaizen::v1::ListModelsRequest* request,
                          kaizen::v1::ListModelsResponse* response) override;
  grpc::Status DeleteModel(grpc::ServerContext* context,
                           const kaizen::v1::DeleteModelRequest* request,
                           kaizen::v1::DeleteModelResponse* response) override;
  grpc::Status DownloadModel(grpc::ServerContext* context,
                             const kaizen::v1::DownloadModelRequest* request,
                             grpc::ServerWriter<kaizen::v1::DownloadModelResponse>* writer) override;

 private:
  store::ModelStore* models_;
  metrics::Metrics* metrics_;
};

}  // namespace kaizen::api
