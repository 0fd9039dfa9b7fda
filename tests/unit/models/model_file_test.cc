#include "server/models/model_file.h"

#include <dirent.h>

#include <fstream>
#include <string>
#include <vector>

#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "server/models/builtin_models.h"
#include "server/models/model_metadata.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::models {
namespace {

std::vector<std::string> ListDir(const std::string& path) {
  std::vector<std::string> names;
  DIR* dir = opendir(path.c_str());
  if (dir == nullptr) return names;
  while (dirent* entry = readdir(dir)) {
    std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  closedir(dir);
  return names;
}

TEST(ModelFileTest, SaveModelFileRoundTripsMetadata) {
  test_util::TempDir dir;
  BuiltinOptions options;
  options.num_classes = 2;
  absl::StatusOr<torch::jit::Module> module = CreateBuiltinModel("resnet-small", options);
  ASSERT_TRUE(module.ok());
  absl::StatusOr<kaizen::v1::Model> meta = DescribeBuiltinModel("resnet-small", options);
  ASSERT_TRUE(meta.ok());
  meta->set_name("shoes");
  meta->set_version(3);
  meta->add_class_names("boot");
  meta->add_class_names("sneaker");
  (*meta->mutable_metrics())["val_accuracy"] = 0.875;
  meta->set_job_id("job-1");

  const std::string path = dir.File("shoes.pt");
  ASSERT_TRUE(SaveModelFile(*module, *meta, path).ok());
  EXPECT_EQ(ListDir(dir.path()), std::vector<std::string>{"shoes.pt"});

  absl::StatusOr<kaizen::v1::Model> read = ReadModelMetadata(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*read, *meta))
      << read->DebugString();

  // The module itself survives too, and overwriting replaces the file.
  torch::jit::Module loaded = torch::jit::load(path);
  EXPECT_EQ(loaded.attr("fc").toModule().attr("weight").toTensor().size(0), 2);
  meta->set_version(4);
  ASSERT_TRUE(SaveModelFile(*module, *meta, path).ok());
  EXPECT_EQ(ReadModelMetadata(path)->version(), 4);
  EXPECT_EQ(ListDir(dir.path()), std::vector<std::string>{"shoes.pt"});
}

TEST(ModelFileTest, SaveModelFileFailsCleanlyForMissingDirectory) {
  test_util::TempDir dir;
  BuiltinOptions options;
  absl::StatusOr<torch::jit::Module> module = CreateBuiltinModel("cnn-small", options);
  ASSERT_TRUE(module.ok());
  absl::Status status = SaveModelFile(*module, kaizen::v1::Model(), dir.File("no/such/dir/m.pt"));
  EXPECT_FALSE(status.ok());
  EXPECT_EQ(status.message().find('\n'), absl::string_view::npos) << status;
}

}  // namespace
}  // namespace kaizen::models
