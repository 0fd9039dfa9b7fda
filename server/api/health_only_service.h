// grpc.health.v1.Health for the plaintext health-only listener
// (KaizenServer::Options::health_port), which kubelet's gRPC probes reach
// without TLS. It answers Check from the state the main port's health service
// reports; Watch, which would hold a thread per caller on an unauthenticated
// port, is left to the main port.
#pragma once

#include <atomic>
#include <string>
#include <vector>

#include "grpc/health/v1/health.grpc.pb.h"

namespace kaizen::api {

class HealthOnlyService final : public grpc::health::v1::Health::Service {
 public:
  // `services` are the names Check knows besides "" (the whole server).
  explicit HealthOnlyService(std::vector<std::string> services) : services_(std::move(services)) {}

  void SetServing(bool serving) { serving_.store(serving); }

  grpc::Status Check(grpc::ServerContext* context,
                     const grpc::health::v1::HealthCheckRequest* request,
                     grpc::health::v1::HealthCheckResponse* response) override;
  grpc::Status Watch(grpc::ServerContext* context,
                     const grpc::health::v1::HealthCheckRequest* request,
                     grpc::ServerWriter<grpc::health::v1::HealthCheckResponse>* writer) override;

 private:
  const std::vector<std::string> services_;
  std::atomic<bool> serving_{false};
};

}  // namespace kaizen::api
