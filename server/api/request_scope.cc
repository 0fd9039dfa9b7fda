#include "server/api/request_scope.h"

#include <optional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/common/logging.h"

namespace kaizen::api {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  auto code = static_cast<grpc::StatusCode>(status.code());
  if (status.code() == absl::StatusCode::kUnknown) code = grpc::StatusCode::INTERNAL;
  return grpc::Status(code, std::string(status.message()));
}

RequestScope::RequestScope(metrics::Metrics* metrics, const char* service, const char* method,
                           grpc::ServerContextBase* context)
    : metrics_(metrics),
      service_(service),
      method_(method),
      context_(context),
      start_(absl::Now()) {
  if (metrics_ != nullptr) metrics_->GrpcStarted(service_, method_);
}

absl::Status RequestScope::Authorize(const auth::Authenticator* auth) {
  if (auth == nullptr || !auth->enabled()) return absl::OkStatus();
  std::optional<absl::string_view> header;
  if (context_ != nullptr) {
    const auto& metadata = context_->client_metadata();
    if (auto it = metadata.find("authorization"); it != metadata.end()) {
      header = absl::string_view(it->second.data(), it->second.size());
    }
  }
  absl::StatusOr<auth::Caller> caller = auth->Identify(header);
  if (!caller.ok()) return caller.status();
  caller_ = caller->name;
  return auth->Permit(*caller, absl::StrCat("/", service_, "/", method_));
}

grpc::Status RequestScope::Finish(const absl::Status& status) {
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start_);
  grpc::Status out = ToGrpcStatus(status);
  const std::string code =
      absl::StatusCodeToString(static_cast<absl::StatusCode>(out.error_code()));
  if (metrics_ != nullptr) {
    metrics_->GrpcHandled(service_, method_, static_cast<absl::StatusCode>(out.error_code()),
                          seconds);
  }
  const common::LogLevel level =
      out.ok() ? common::LogLevel::kInfo
               : (out.error_code() == grpc::StatusCode::INTERNAL ? common::LogLevel::kError
                                                                 : common::LogLevel::kWarning);
  common::Log(level, "request",
              {{"method", method_},
               {"code", code},
               {"ms", seconds * 1000.0},
               {"peer", context_ != nullptr ? context_->peer() : std::string()},
               {"resource", resource_},
               {"caller", caller_},
               {"error", out.error_message()}});
  return out;
}

}  // namespace kaizen::api
