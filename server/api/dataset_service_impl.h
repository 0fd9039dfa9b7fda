// kaizen.v1.DatasetService: translates requests and calls the DatasetStore.
#pragma once

#include "kaizen/v1/dataset_service.grpc.pb.h"
#include "server/metrics/metrics.h"
#include "server/store/dataset_store.h"

namespace kaizen::api {

class DatasetServiceImpl final : public kaizen::v1::DatasetService::Service {
 public:
  DatasetServiceImpl(store::DatasetStore* datasets, metrics::Metrics* metrics)
      : datasets_(datasets), metrics_(metrics) {}

  grpc::Status UploadDataset(grpc::ServerContext* context,
                             grpc::ServerReader<kaizen::v1::UploadDatasetRequest>* reader,
                             kaizen::v1::Dataset* response) override;
  grpc::Status GetDataset(grpc::ServerContext* context, const kaizen::v1::GetDatasetRequest* request,
                          kaizen::v1::Dataset* response) override;
  grpc::Status ListDatasets(grpc::ServerContext* context,
                            const kaizen::v1::ListDatasetsRequest* request,
                            kaizen::v1::ListDatasetsResponse* response) override;
  grpc::Status DeleteDataset(grpc::ServerContext* context,
                             const kaizen::v1::DeleteDatasetRequest* request,
                             kaizen::v1::DeleteDatasetResponse* response) override;

 private:
  store::DatasetStore* datasets_;
  metrics::Metrics* metrics_;
};

}  // namespace kaizen::api
