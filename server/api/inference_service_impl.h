// kaizen.v1.InferenceService: validates and preprocesses Predict requests,
// then hands them to the serving engine's batcher.
#pragma once

#include "kaizen/v1/inference_service.grpc.pb.h"
#include "server/auth/authenticator.h"
#include "server/metrics/metrics.h"
#include "server/serving/model_server.h"

namespace kaizen::api {

class InferenceServiceImpl final : public kaizen::v1::InferenceService::Service {
 public:
  InferenceServiceImpl(serving::ModelServer* models, metrics::Metrics* metrics,
                       const auth::Authenticator* auth)
      : models_(models), metrics_(metrics), auth_(auth) {}

  grpc::Status Predict(grpc::ServerContext* context, const kaizen::v1::PredictRequest* request,
                       kaizen::v1::PredictResponse* response) override;

 private:
  absl::Status DoPredict(grpc::ServerContext* context, const kaizen::v1::PredictRequest& request,
                         kaizen::v1::PredictResponse* response);

  serving::ModelServer* models_;
  metrics::Metrics* metrics_;
  const auth::Authenticator* auth_;
};

// The caller's deadline and cancellation, for the batcher.
serving::InferOptions InferOptionsFor(grpc::ServerContext* context);

}  // namespace kaizen::api
