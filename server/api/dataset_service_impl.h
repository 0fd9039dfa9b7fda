// kaizen.v1.DatasetService: translates requests and calls the DatasetStore.
// UploadDataset runs on the callback API (see UploadReactor) so that a slow
// or silent client holds no thread; the unary RPCs are short and sync.
#pragma once

#include "kaizen/v1/dataset_service.grpc.pb.h"
#include "server/api/upload_runner.h"
#include "server/auth/authenticator.h"
#include "server/metrics/metrics.h"
#include "server/store/dataset_store.h"

namespace kaizen::api {

class DatasetServiceImpl final
    : public kaizen::v1::DatasetService::WithCallbackMethod_UploadDataset<
          kaizen::v1::DatasetService::Service> {
 public:
  DatasetServiceImpl(store::DatasetStore* datasets, UploadRunner* uploads,
                     metrics::Metrics* metrics, const auth::Authenticator* auth)
      : datasets_(datasets), uploads_(uploads), metrics_(metrics), auth_(auth) {}

  grpc::ServerReadReactor<kaizen::v1::UploadDatasetRequest>* UploadDataset(
      grpc::CallbackServerContext* context, kaizen::v1::Dataset* response) override;
  grpc::Status GetDataset(grpc::ServerContext* context,
                          const kaizen::v1::GetDatasetRequest* request,
                          kaizen::v1::Dataset* response) override;
  grpc::Status ListDatasets(grpc::ServerContext* context,
                            const kaizen::v1::ListDatasetsRequest* request,
                            kaizen::v1::ListDatasetsResponse* response) override;
  grpc::Status DeleteDataset(grpc::ServerContext* context,
                             const kaizen::v1::DeleteDatasetRequest* request,
                             kaizen::v1::DeleteDatasetResponse* response) override;

 private:
  store::DatasetStore* datasets_;
  UploadRunner* uploads_;
  metrics::Metrics* metrics_;
  const auth::Authenticator* auth_;
};

}  // namespace kaizen::api
