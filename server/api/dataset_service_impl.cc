#include "server/api/dataset_service_impl.h"

#include "server/api/request_scope.h"
#include "server/api/upload_reactor.h"

namespace kaizen::api {

// The service name in grpc_service labels.
constexpr const char* kService = kaizen::v1::DatasetService::service_full_name();

using kaizen::v1::Dataset;

grpc::ServerReadReactor<kaizen::v1::UploadDatasetRequest>* DatasetServiceImpl::UploadDataset(
    grpc::CallbackServerContext* context, Dataset* response) {
  using Reactor =
      UploadReactor<kaizen::v1::UploadDatasetRequest, Dataset, store::DatasetStore::Upload>;
  store::DatasetStore* datasets = datasets_;
  metrics::Metrics* metrics = metrics_;
  return Reactor::Start(
      context, response, uploads_, metrics_, auth_, kService, "UploadDataset",
      [datasets](const kaizen::v1::UploadDatasetHeader& header) {
        return datasets->BeginUpload(header);
      },
      [metrics](const Dataset&, int64_t bytes) { metrics->AddUploadBytes("dataset", bytes); });
}

grpc::Status DatasetServiceImpl::GetDataset(grpc::ServerContext* context,
                                            const kaizen::v1::GetDatasetRequest* request,
                                            Dataset* response) {
  RequestScope scope(metrics_, kService, "GetDataset", context);
  AUTHORIZE_OR_RETURN(scope, auth_);
  scope.set_resource(request->name());
  absl::StatusOr<Dataset> d = datasets_->Get(request->name());
  if (d.ok()) *response = *std::move(d);
  return scope.Finish(d.status());
}

grpc::Status DatasetServiceImpl::ListDatasets(grpc::ServerContext* context,
                                              const kaizen::v1::ListDatasetsRequest* request,
                                              kaizen::v1::ListDatasetsResponse* response) {
  RequestScope scope(metrics_, kService, "ListDatasets", context);
  AUTHORIZE_OR_RETURN(scope, auth_);
  auto list = datasets_->List(request->page_size(), request->page_token());
  if (list.ok()) *response = *std::move(list);
  return scope.Finish(list.status());
}

grpc::Status DatasetServiceImpl::DeleteDataset(grpc::ServerContext* context,
                                               const kaizen::v1::DeleteDatasetRequest* request,
                                               kaizen::v1::DeleteDatasetResponse*) {
  RequestScope scope(metrics_, kService, "DeleteDataset", context);
  AUTHORIZE_OR_RETURN(scope, auth_);
  scope.set_resource(request->name());
  return scope.Finish(datasets_->Delete(request->name()));
}

}  // namespace kaizen::api
