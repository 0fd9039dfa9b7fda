#include "server/api/dataset_service_impl.h"

#include "server/api/request_scope.h"
#include "server/api/upload_stream.h"

namespace kaizen::api {

using kaizen::v1::Dataset;

grpc::Status DatasetServiceImpl::UploadDataset(
    grpc::ServerContext* context, grpc::ServerReader<kaizen::v1::UploadDatasetRequest>* reader,
    Dataset* response) {
  RequestScope scope(metrics_, "UploadDataset", context);
  int64_t bytes = 0;
  absl::StatusOr<Dataset> result = ReceiveUpload<kaizen::v1::UploadDatasetRequest, Dataset>(
      context, reader,
      [&](const kaizen::v1::UploadDatasetHeader& header) {
        scope.set_resource(header.name());
        return datasets_->BeginUpload(header);
      },
      &bytes);
  if (result.ok()) {
    *response = *std::move(result);
    metrics_->AddUploadBytes("dataset", bytes);
  }
  return scope.Finish(result.status());
}

grpc::Status DatasetServiceImpl::GetDataset(grpc::ServerContext* context,
                                            const kaizen::v1::GetDatasetRequest* request,
                                            Dataset* response) {
  RequestScope scope(metrics_, "GetDataset", context);
  scope.set_resource(request->name());
  absl::StatusOr<Dataset> d = datasets_->Get(request->name());
  if (d.ok()) *response = *std::move(d);
  return scope.Finish(d.status());
}

grpc::Status DatasetServiceImpl::ListDatasets(grpc::ServerContext* context,
                                              const kaizen::v1::ListDatasetsRequest* request,
                                              kaizen::v1::ListDatasetsResponse* response) {
  RequestScope scope(metrics_, "ListDatasets", context);
  auto list = datasets_->List(request->page_size(), request->page_token());
  if (list.ok()) *response = *std::move(list);
  return scope.Finish(list.status());
}

grpc::Status DatasetServiceImpl::DeleteDataset(grpc::ServerContext* context,
                                               const kaizen::v1::DeleteDatasetRequest* request,
                                               kaizen::v1::DeleteDatasetResponse*) {
  RequestScope scope(metrics_, "DeleteDataset", context);
  scope.set_resource(request->name());
  return scope.Finish(datasets_->Delete(request->name()));
}

}  // namespace kaizen::api
