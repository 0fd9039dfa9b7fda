// Per-request bookkeeping at the gRPC edge: converts absl::Status to
// grpc::Status, logs one JSON line per request outcome and records metrics
// (grpc_server_started_total when constructed, grpc_server_handled_total and
// grpc_server_handling_seconds in Finish).
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "server/auth/authenticator.h"
#include "server/metrics/metrics.h"

namespace kaizen::api {

// Same code and message; UNKNOWN never leaves the server (it becomes INTERNAL).
grpc::Status ToGrpcStatus(const absl::Status& status);

class RequestScope {
 public:
  // `service` is the full name ("kaizen.v1.InferenceService"), `method` the
  // bare one ("Predict"); both must outlive the scope (string literals).
  RequestScope(metrics::Metrics* metrics, const char* service, const char* method,
               grpc::ServerContextBase* context);

  // Checks the call's bearer token and the caller's role for
  // /service/method (see auth::Authenticator); the log line then names the
  // token. Every handler calls it first (AUTHORIZE_OR_RETURN) and answers
  // with Finish(status) when it fails. A null `auth` allows everything.
  absl::Status Authorize(const auth::Authenticator* auth);

  // Extra key shown in the log line (e.g. the dataset name).
  void set_resource(std::string resource) { resource_ = std::move(resource); }

  // Logs and records the outcome, and returns it as a grpc::Status.
  grpc::Status Finish(const absl::Status& status);

 private:
  metrics::Metrics* metrics_;
  const char* service_;
  const char* method_;
  grpc::ServerContextBase* context_;
  absl::Time start_;
  std::string resource_;
  std::string caller_;
};

// Returns scope.Finish(denied) from a sync handler when the caller may not
// call this method.
#define AUTHORIZE_OR_RETURN(scope, auth)                                 \
  do {                                                                   \
    if (absl::Status denied_ = (scope).Authorize(auth); !denied_.ok()) { \
      return (scope).Finish(denied_);                                    \
    }                                                                    \
  } while (0)

}  // namespace kaizen::api
