#include "server/auth/roles.h"

#include <initializer_list>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace kaizen::auth {
namespace {

// One bit per role.
using RoleSet = unsigned;
constexpr RoleSet Bit(Role r) { return 1u << static_cast<unsigned>(r); }
constexpr RoleSet kAdminOnly = Bit(Role::kAdmin);
constexpr RoleSet kTrainers = kAdminOnly | Bit(Role::kTrainer);
constexpr RoleSet kReaders = kTrainers | Bit(Role::kReader);
constexpr RoleSet kModelReaders = kReaders | Bit(Role::kPredictor);
constexpr RoleSet kPredictors = kAdminOnly | Bit(Role::kPredictor);

struct Rule {
  const char* method;
  RoleSet roles;
};

constexpr Rule kRules[] = {
    {"/kaizen.v1.DatasetService/UploadDataset", kTrainers},
    {"/kaizen.v1.DatasetService/GetDataset", kReaders},
    {"/kaizen.v1.DatasetService/ListDatasets", kReaders},
    {"/kaizen.v1.DatasetService/DeleteDataset", kAdminOnly},
    {"/kaizen.v1.ModelService/UploadModel", kTrainers},
    {"/kaizen.v1.ModelService/GetModel", kModelReaders},
    {"/kaizen.v1.ModelService/ListModels", kModelReaders},
    {"/kaizen.v1.ModelService/DeleteModel", kAdminOnly},
    // Runs a model over a whole dataset: compute, like a job.
    {"/kaizen.v1.ModelService/EvaluateModel", kTrainers},
    // The weights themselves: more than metadata, so not for readers or
    // predictors.
    {"/kaizen.v1.ModelService/DownloadModel", kTrainers},
    {"/kaizen.v1.FineTuneService/StartFineTune", kTrainers},
    {"/kaizen.v1.FineTuneService/GetJob", kReaders},
    {"/kaizen.v1.FineTuneService/ListJobs", kReaders},
    {"/kaizen.v1.FineTuneService/CancelJob", kTrainers},
    {"/kaizen.v1.FineTuneService/PauseJob", kTrainers},
    {"/kaizen.v1.FineTuneService/ResumeJob", kTrainers},
    // Writes the job's model and settings to the data volume for pods.
    {"/kaizen.v1.FineTuneService/ExportJob", kTrainers},
    {"/kaizen.v1.FineTuneService/ListExports", kReaders},
    // Trainers make exports, and free the room they take (--max_exports).
    {"/kaizen.v1.FineTuneService/DeleteExport", kTrainers},
    {"/kaizen.v1.FineTuneService/WatchJob", kReaders},
    {"/kaizen.v1.InferenceService/Predict", kPredictors},
    {"/inference.GRPCInferenceService/ServerLive", kModelReaders},
    {"/inference.GRPCInferenceService/ServerReady", kModelReaders},
    {"/inference.GRPCInferenceService/ModelReady", kModelReaders},
    {"/inference.GRPCInferenceService/ServerMetadata", kModelReaders},
    {"/inference.GRPCInferenceService/ModelMetadata", kModelReaders},
    {"/inference.GRPCInferenceService/ModelInfer", kPredictors},
};

const absl::flat_hash_map<absl::string_view, RoleSet>& Table() {
  static const auto* table = [] {
    auto* t = new absl::flat_hash_map<absl::string_view, RoleSet>();
    for (const Rule& rule : kRules) t->emplace(rule.method, rule.roles);
    return t;
  }();
  return *table;
}

}  // namespace

absl::string_view RoleName(Role role) {
  switch (role) {
    case Role::kAdmin:
      return "admin";
    case Role::kTrainer:
      return "trainer";
    case Role::kPredictor:
      return "predictor";
    case Role::kReader:
      return "reader";
  }
  return "unknown";
}

absl::StatusOr<Role> ParseRole(absl::string_view name) {
  for (Role role : {Role::kAdmin, Role::kTrainer, Role::kPredictor, Role::kReader}) {
    if (name == RoleName(role)) return role;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown role \"", name.substr(0, 32), "\"; roles are admin, trainer, predictor, reader"));
}

bool RoleAllows(Role role, absl::string_view full_method) {
  if (role == Role::kAdmin) return true;
  auto it = Table().find(full_method);
  return it != Table().end() && (it->second & Bit(role)) != 0;
}

std::vector<std::string> MethodsInTable() {
  std::vector<std::string> out;
  for (const Rule& rule : kRules) out.emplace_back(rule.method);
  return out;
}

}  // namespace kaizen::auth
