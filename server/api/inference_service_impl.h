// kaizen.v1.InferenceService: translates Predict requests into the
// Predictor's protocol-neutral inputs and its probabilities into top-k
// classes. Owns nothing; the Predictor and Metrics outlive it.
#pragma once

#include "kaizen/v1/inference_service.grpc.pb.h"
#include "server/auth/authenticator.h"
#include "server/metrics/metrics.h"
#include "server/serving/predictor.h"

namespace kaizen::api {

class InferenceServiceImpl final : public kaizen::v1::InferenceService::Service {
 public:
  InferenceServiceImpl(const serving::Predictor* predictor, metrics::Metrics* metrics,
                       const auth::Authenticator* auth)
      : predictor_(predictor), metrics_(metrics), auth_(auth) {}

  grpc::Status Predict(grpc::ServerContext* context, const kaizen::v1::PredictRequest* request,
                       kaizen::v1::PredictResponse* response) override;

 private:
  absl::Status DoPredict(grpc::ServerContext* context, const kaizen::v1::PredictRequest& request,
                         kaizen::v1::PredictResponse* response);

  const serving::Predictor* predictor_;
  metrics::Metrics* metrics_;
  const auth::Authenticator* auth_;
};

}  // namespace kaizen::api
