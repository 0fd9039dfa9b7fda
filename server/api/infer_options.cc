#include "server/api/infer_options.h"

#include <chrono>

#include "absl/time/time.h"

namespace kaizen::api {

serving::InferOptions InferOptionsFor(grpc::ServerContext* context) {
  serving::InferOptions o;
  const std::chrono::system_clock::time_point deadline = context->deadline();
  if (deadline != std::chrono::system_clock::time_point::max()) {
    o.deadline = absl::FromChrono(deadline);
  }
  o.cancelled = [context] { return context->IsCancelled(); };
  return o;
}

}  // namespace kaizen::api
