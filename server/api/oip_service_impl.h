// inference.GRPCInferenceService, the Open Inference Protocol (KServe v2) as
// Triton serves it, over the serving engine: ModelInfer translates requests
// with the OIP codec (oip_codec.h) and runs them through the Predictor; the
// health and metadata calls ask the ModelServer. Answers in Triton's form, so
// that OIP clients (tritonclient, perf_analyzer) work unchanged. Owns
// nothing; the ModelServer, Predictor and Metrics outlive it.
#pragma once

#include "inference/grpc_service.grpc.pb.h"
#include "server/auth/authenticator.h"
#include "server/metrics/metrics.h"
#include "server/serving/model_server.h"
#include "server/serving/predictor.h"

namespace kaizen::api {

class OipServiceImpl final : public inference::GRPCInferenceService::Service {
 public:
  OipServiceImpl(serving::ModelServer* models, const serving::Predictor* predictor,
                 metrics::Metrics* metrics, const auth::Authenticator* auth)
      : models_(models), predictor_(predictor), metrics_(metrics), auth_(auth) {}

  grpc::Status ServerLive(grpc::ServerContext* context, const inference::ServerLiveRequest* request,
                          inference::ServerLiveResponse* response) override;
  grpc::Status ServerReady(grpc::ServerContext* context,
                           const inference::ServerReadyRequest* request,
                           inference::ServerReadyResponse* response) override;
  grpc::Status ModelReady(grpc::ServerContext* context, const inference::ModelReadyRequest* request,
                          inference::ModelReadyResponse* response) override;
  grpc::Status ServerMetadata(grpc::ServerContext* context,
                              const inference::ServerMetadataRequest* request,
                              inference::ServerMetadataResponse* response) override;
  grpc::Status ModelMetadata(grpc::ServerContext* context,
                             const inference::ModelMetadataRequest* request,
                             inference::ModelMetadataResponse* response) override;
  grpc::Status ModelInfer(grpc::ServerContext* context, const inference::ModelInferRequest* request,
                          inference::ModelInferResponse* response) override;

 private:
  serving::ModelServer* models_;
  const serving::Predictor* predictor_;
  metrics::Metrics* metrics_;
  const auth::Authenticator* auth_;
};

}  // namespace kaizen::api
