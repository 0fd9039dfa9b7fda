#include "server/api/health_only_service.h"

#include <algorithm>

namespace kaizen::api {

using grpc::health::v1::HealthCheckResponse;

grpc::Status HealthOnlyService::Check(grpc::ServerContext*,
                                      const grpc::health::v1::HealthCheckRequest* request,
                                      HealthCheckResponse* response) {
  const std::string& service = request->service();
  if (!service.empty() &&
      std::find(services_.begin(), services_.end(), service) == services_.end()) {
    // What the default health service answers for an unknown name.
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service");
  }
  response->set_status(serving_.load() ? HealthCheckResponse::SERVING
                                       : HealthCheckResponse::NOT_SERVING);
  return grpc::Status::OK;
}

grpc::Status HealthOnlyService::Watch(grpc::ServerContext*,
                                      const grpc::health::v1::HealthCheckRequest*,
                                      grpc::ServerWriter<HealthCheckResponse>*) {
  return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                      "the health port answers Check only; Watch is served on the gRPC port");
}

}  // namespace kaizen::api
