#include "server/serving/model_loader.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "server/models/model_file.h"
#include "tests/test_util/temp_dir.h"
#include "tests/unit/serving/serving_test_util.h"

namespace kaizen::serving {
namespace {

TEST(ModelLoaderTest, TorchScriptLoaderLoadsAStoredVersion) {
  test_util::TempDir dir;
  kaizen::v1::Model meta = fixtures::TinyMetadata();
  meta.set_name("tiny");
  meta.set_version(5);
  const std::string path = dir.File("tiny-5.pt");
  ASSERT_TRUE(models::SaveModelFile(fixtures::TinyModule(), meta, path).ok());
  for (bool optimize : {false, true}) {
    ModelLoader load = TorchScriptLoader(torch::kCPU, optimize);
    absl::StatusOr<std::shared_ptr<const LoadedModel>> model = load(path, meta, {1});
    ASSERT_TRUE(model.ok()) << model.status();
    EXPECT_EQ((*model)->version(), 5);
    if (!optimize) EXPECT_FALSE((*model)->optimized());
    absl::StatusOr<torch::Tensor> p = (*model)->Predict(torch::zeros({1, 1, 2, 2}));
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_NEAR(p->sum().item<float>(), 1.0f, 1e-5);
  }
}

TEST(ModelLoaderTest, TorchScriptLoaderReportsAFileThatIsNotAModel) {
  test_util::TempDir dir;
  ModelLoader load = TorchScriptLoader(torch::kCPU, true);
  EXPECT_FALSE(load(dir.File("absent.pt"), fixtures::TinyMetadata(), {1}).ok());
}

}  // namespace
}  // namespace kaizen::serving
