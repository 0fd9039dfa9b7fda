#include "server/serving/loaded_model.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "server/models/model_file.h"
#include "tests/test_util/temp_dir.h"
#include "tests/unit/serving/serving_test_util.h"

namespace kaizen::serving {
namespace {

using ::testing::HasSubstr;

TEST(LoadedModelTest, PredictGivesSoftmaxProbabilitiesOfTheLogits) {
  test_util::TempDir dir;
  std::shared_ptr<const LoadedModel> model = fixtures::TinyModel(dir, 3);
  EXPECT_EQ(model->name(), "tiny");
  EXPECT_EQ(model->version(), 3);
  EXPECT_EQ(model->input_shape(), (std::vector<int64_t>{1, 2, 2}));
  EXPECT_EQ(model->num_classes(), 3);
  const torch::Tensor batch = torch::tensor({1.0f, 2.0f, 3.0f, 9.0f}).reshape({1, 1, 2, 2});
  absl::StatusOr<torch::Tensor> p = model->Predict(batch);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->sizes(), (std::vector<int64_t>{1, 3}));
  const torch::Tensor expected = torch::softmax(torch::tensor({{1.0f, 2.0f, 3.0f}}), 1);
  EXPECT_TRUE(torch::allclose(*p, expected, 1e-5, 1e-6)) << *p;
}

TEST(LoadedModelTest, LabelsAreClassNamesOrIndices) {
  test_util::TempDir dir;
  std::shared_ptr<const LoadedModel> model = fixtures::TinyModel(dir);
  EXPECT_EQ(model->Label(1), "b");
  EXPECT_EQ(model->Label(7), "7");
}

TEST(LoadedModelTest, AModelThatIsNotAClassifierIsRefusedAtLoad) {
  test_util::TempDir dir;
  torch::jit::Module m("NotAClassifier");
  m.define("def forward(self, x):\n  return x\n");  // [N, 1, 2, 2], not [N, classes]
  kaizen::v1::Model meta = fixtures::TinyMetadata();
  const std::string path = dir.File("bad.pt");
  ASSERT_TRUE(models::SaveModelFile(m, meta, path).ok());
  auto loaded = LoadedModel::Load(path, meta, torch::kCPU, {1});
  ASSERT_FALSE(loaded.ok());
  EXPECT_THAT(loaded.status().message(), HasSubstr("a classifier must return [N, classes]"));
}

TEST(LoadedModelTest, MetadataWithoutAnImageShapeIsRefused) {
  test_util::TempDir dir;
  kaizen::v1::Model meta = fixtures::TinyMetadata();
  const std::string path = dir.File("tiny.pt");
  ASSERT_TRUE(models::SaveModelFile(fixtures::TinyModule(), meta, path).ok());
  meta.clear_input_shape();
  meta.add_input_shape(4);
  auto loaded = LoadedModel::Load(path, meta, torch::kCPU, {1});
  ASSERT_EQ(loaded.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(loaded.status().message(), HasSubstr("no [C, H, W] input shape"));
}

TEST(LoadedModelTest, AMissingFileIsAnError) {
  test_util::TempDir dir;
  EXPECT_FALSE(
      LoadedModel::Load(dir.File("absent.pt"), fixtures::TinyMetadata(), torch::kCPU, {1}).ok());
}

TEST(LoadedModelTest, FreezingKeepsTheAnswers) {
  test_util::TempDir dir;
  kaizen::v1::Model meta = fixtures::TinyMetadata();
  const std::string path = dir.File("tiny.pt");
  ASSERT_TRUE(models::SaveModelFile(fixtures::TinyModule(2.0), meta, path).ok());
  auto plain = LoadedModel::Load(path, meta, torch::kCPU, {1}, /*optimize=*/false);
  auto optimized = LoadedModel::Load(path, meta, torch::kCPU, {1, 2}, /*optimize=*/true);
  ASSERT_TRUE(plain.ok() && optimized.ok());
  EXPECT_FALSE((*plain)->optimized());
  const torch::Tensor batch = torch::rand({2, 1, 2, 2});
  auto a = (*plain)->Predict(batch);
  auto b = (*optimized)->Predict(batch);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(torch::allclose(*a, *b, 1e-5, 1e-6));
}

}  // namespace
}  // namespace kaizen::serving
