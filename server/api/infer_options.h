// The caller's deadline and cancellation of a gRPC call, in the serving
// engine's terms; both inference services (Predict and ModelInfer) take them
// from here.
#pragma once

#include <grpcpp/server_context.h>

#include "server/serving/model_batcher.h"

namespace kaizen::api {

// The deadline (InfiniteFuture when the caller set none) and a cancellation
// poll of `context`, which must outlive the returned options.
serving::InferOptions InferOptionsFor(grpc::ServerContext* context);

}  // namespace kaizen::api
