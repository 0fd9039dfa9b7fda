// The four roles a bearer token can hold and which RPCs each may call. The
// table is keyed by the full method name ("/kaizen.v1.DatasetService/
// UploadDataset"); a method missing from it is open to admin only, so that a
// new RPC is never reachable by accident.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kaizen::auth {

enum class Role {
  // Everything.
  kAdmin,
  // Uploads datasets and models, starts, cancels, pauses and resumes jobs,
  // and reads everything (downloads included).
  kTrainer,
  // Predict, ModelInfer and read-only model metadata.
  kPredictor,
  // Get, List and Watch only.
  kReader,
};

// "admin", "trainer", "predictor", "reader".
absl::string_view RoleName(Role role);
absl::StatusOr<Role> ParseRole(absl::string_view name);

// Whether `role` may call `full_method` ("/package.Service/Method").
bool RoleAllows(Role role, absl::string_view full_method);

// Every method the table names, for tests that check each one.
std::vector<std::string> MethodsInTable();

}  // namespace kaizen::auth
