#include "server/models/model_metadata.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "google/protobuf/util/message_differencer.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::models {
namespace {

using ::testing::HasSubstr;

TEST(ModelMetadataTest, JsonRoundTripsEveryField) {
  kaizen::v1::Model model;
  model.set_name("shoes");
  model.set_version(3);
  model.add_input_shape(1);
  model.add_input_shape(28);
  model.add_input_shape(28);
  model.add_class_names("boot");
  model.add_class_names("sneaker");
  (*model.mutable_metrics())["val_accuracy"] = 0.875;
  absl::StatusOr<std::string> json = ModelToMetadataJson(model);
  ASSERT_TRUE(json.ok()) << json.status();
  // Proto field names, as Python tools read them.
  EXPECT_THAT(*json, HasSubstr("\"class_names\""));
  absl::StatusOr<kaizen::v1::Model> back = ModelFromMetadataJson(*json);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*back, model))
      << back->DebugString();
}

TEST(ModelMetadataTest, UnknownFieldsFromNewerServersAreIgnored) {
  absl::StatusOr<kaizen::v1::Model> model =
      ModelFromMetadataJson(R"({"name": "m", "version": "2", "fieldFromTheFuture": [1, 2]})");
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->name(), "m");
  EXPECT_EQ(model->version(), 2);
}

TEST(ModelMetadataTest, MalformedJsonIsInvalidArgument) {
  for (const char* json : {"", "{", "[1, 2]", R"({"version": "two"})"}) {
    EXPECT_EQ(ModelFromMetadataJson(json).status().code(), absl::StatusCode::kInvalidArgument)
        << json;
  }
}

TEST(ModelMetadataTest, ReadModelMetadataReportsMissingAndGarbage) {
  test_util::TempDir dir;
  EXPECT_EQ(ReadModelMetadata(dir.File("missing.pt")).status().code(), absl::StatusCode::kNotFound);
  // A TorchScript file written by plain Python has no kaizen.json.
  EXPECT_EQ(ReadModelMetadata(KAIZEN_FIXTURE_DIR "/resnet18.pt").status().code(),
            absl::StatusCode::kNotFound);
  const std::string garbage = dir.File("garbage.pt");
  std::ofstream(garbage) << "not a zip";
  EXPECT_EQ(ReadModelMetadata(garbage).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kaizen::models
