#include "server/auth/roles.h"

#include <gtest/gtest.h>

#include <set>

namespace kaizen::auth {
namespace {

TEST(RolesTest, EachRoleGetsExactlyItsMethods) {
  const std::set<std::string> trainer = {"/kaizen.v1.DatasetService/UploadDataset",
                                         "/kaizen.v1.DatasetService/GetDataset",
                                         "/kaizen.v1.DatasetService/ListDatasets",
                                         "/kaizen.v1.ModelService/UploadModel",
                                         "/kaizen.v1.ModelService/GetModel",
                                         "/kaizen.v1.ModelService/ListModels",
                                         "/kaizen.v1.ModelService/DownloadModel",
                                         "/kaizen.v1.ModelService/EvaluateModel",
                                         "/kaizen.v1.FineTuneService/StartFineTune",
                                         "/kaizen.v1.FineTuneService/GetJob",
                                         "/kaizen.v1.FineTuneService/ListJobs",
                                         "/kaizen.v1.FineTuneService/CancelJob",
                                         "/kaizen.v1.FineTuneService/PauseJob",
                                         "/kaizen.v1.FineTuneService/ResumeJob",
                                         "/kaizen.v1.FineTuneService/ExportJob",
                                         "/kaizen.v1.FineTuneService/ListExports",
                                         "/kaizen.v1.FineTuneService/DeleteExport",
                                         "/kaizen.v1.FineTuneService/WatchJob",
                                         "/inference.GRPCInferenceService/ServerLive",
                                         "/inference.GRPCInferenceService/ServerReady",
                                         "/inference.GRPCInferenceService/ModelReady",
                                         "/inference.GRPCInferenceService/ServerMetadata",
                                         "/inference.GRPCInferenceService/ModelMetadata"};
  const std::set<std::string> predictor = {"/kaizen.v1.ModelService/GetModel",
                                           "/kaizen.v1.ModelService/ListModels",
                                           "/kaizen.v1.InferenceService/Predict",
                                           "/inference.GRPCInferenceService/ServerLive",
                                           "/inference.GRPCInferenceService/ServerReady",
                                           "/inference.GRPCInferenceService/ModelReady",
                                           "/inference.GRPCInferenceService/ServerMetadata",
                                           "/inference.GRPCInferenceService/ModelMetadata",
                                           "/inference.GRPCInferenceService/ModelInfer"};
  const std::set<std::string> reader = {"/kaizen.v1.DatasetService/GetDataset",
                                        "/kaizen.v1.DatasetService/ListDatasets",
                                        "/kaizen.v1.ModelService/GetModel",
                                        "/kaizen.v1.ModelService/ListModels",
                                        "/kaizen.v1.FineTuneService/GetJob",
                                        "/kaizen.v1.FineTuneService/ListJobs",
                                        "/kaizen.v1.FineTuneService/ListExports",
                                        "/kaizen.v1.FineTuneService/WatchJob",
                                        "/inference.GRPCInferenceService/ServerLive",
                                        "/inference.GRPCInferenceService/ServerReady",
                                        "/inference.GRPCInferenceService/ModelReady",
                                        "/inference.GRPCInferenceService/ServerMetadata",
                                        "/inference.GRPCInferenceService/ModelMetadata"};
  for (const std::string& method : MethodsInTable()) {
    EXPECT_TRUE(RoleAllows(Role::kAdmin, method)) << method;
    EXPECT_EQ(RoleAllows(Role::kTrainer, method), trainer.count(method) == 1) << method;
    EXPECT_EQ(RoleAllows(Role::kPredictor, method), predictor.count(method) == 1) << method;
    EXPECT_EQ(RoleAllows(Role::kReader, method), reader.count(method) == 1) << method;
  }
}

TEST(RolesTest, MethodsMissingFromTheTableAreAdminOnly) {
  for (const char* method : {"/kaizen.v1.DatasetService/NewThing", "/x.Y/Z", ""}) {
    EXPECT_TRUE(RoleAllows(Role::kAdmin, method));
    EXPECT_FALSE(RoleAllows(Role::kTrainer, method));
    EXPECT_FALSE(RoleAllows(Role::kPredictor, method));
    EXPECT_FALSE(RoleAllows(Role::kReader, method));
  }
}

TEST(RolesTest, NamesRoundTrip) {
  for (Role r : {Role::kAdmin, Role::kTrainer, Role::kPredictor, Role::kReader}) {
    absl::StatusOr<Role> parsed = ParseRole(RoleName(r));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, r);
  }
  EXPECT_FALSE(ParseRole("Admin").ok());
  EXPECT_FALSE(ParseRole("").ok());
}

}  // namespace
}  // namespace kaizen::auth
