#include "server/training/teacher.h"

#include <torch/torch.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/training/training_test_util.h"

namespace kaizen::training {
namespace {

using ::testing::HasSubstr;

torch::Tensor RandomImages(int64_t n, int64_t c = 1, int64_t size = 28) {
  torch::manual_seed(11);
  return torch::randint(0, 256, {n, c, size, size}, torch::kLong).to(torch::kUInt8);
}

TEST(TeacherTest, LogitsAreTheTeachersOwnOutputWithoutGradient) {
  const fixtures::BaseModel t = fixtures::Builtin("cnn-small", 4);
  auto teacher = Teacher::Create(t.module, t.metadata, {1, 28, 28}, 4, torch::kCPU);
  ASSERT_TRUE(teacher.ok()) << teacher.status();
  const torch::Tensor x = imaging::Normalizer::ToUnit(RandomImages(3));
  const torch::Tensor logits = (*teacher)->Logits(x);
  ASSERT_EQ(logits.sizes(), (std::vector<int64_t>{3, 4}));
  EXPECT_FALSE(logits.requires_grad());
  EXPECT_EQ((*teacher)->forward_batches(), 1);
  // By hand: the teacher's normalisation, then its module in eval mode.
  torch::jit::Module m = t.module.clone();
  m.eval();
  const imaging::Normalizer norm(t.metadata.normalization(), 1, torch::kCPU);
  torch::NoGradGuard no_grad;
  const torch::Tensor expected = m.forward({norm.Normalize(x)}).toTensor();
  EXPECT_TRUE(torch::allclose(logits, expected, 1e-5, 1e-6));
}

TEST(TeacherTest, AdaptsTheStudentsImagesToTheTeachersInput) {
  // A 3-channel 32x32 teacher for a 1-channel 28x28 student.
  const fixtures::BaseModel t = fixtures::Builtin("cnn-small", 5, 32, 3);
  auto teacher = Teacher::Create(t.module, t.metadata, {1, 28, 28}, 5, torch::kCPU);
  ASSERT_TRUE(teacher.ok()) << teacher.status();
  const torch::Tensor x = imaging::Normalizer::ToUnit(RandomImages(2));
  const torch::Tensor logits = (*teacher)->Logits(x);
  namespace F = torch::nn::functional;
  const torch::Tensor adapted =
      F::interpolate(x.expand({-1, 3, -1, -1}), F::InterpolateFuncOptions()
                                                    .size(std::vector<int64_t>{32, 32})
                                                    .mode(torch::kBilinear)
                                                    .align_corners(false));
  torch::jit::Module m = t.module.clone();
  m.eval();
  const imaging::Normalizer norm(t.metadata.normalization(), 3, torch::kCPU);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::allclose(logits, m.forward({norm.Normalize(adapted)}).toTensor(), 1e-5, 1e-6));
}

TEST(TeacherTest, RefusesATeacherWithAnotherClassCount) {
  const fixtures::BaseModel t = fixtures::Builtin("cnn-small", 4);
  auto teacher = Teacher::Create(t.module, t.metadata, {1, 28, 28}, 5, torch::kCPU);
  ASSERT_EQ(teacher.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(teacher.status().message()),
              HasSubstr("its output for one image has shape [1, 4]; distillation needs [1, 5]"));
  kaizen::v1::Model no_shape = t.metadata;
  no_shape.clear_input_shape();
  EXPECT_EQ(Teacher::Create(t.module, no_shape, {1, 28, 28}, 4, torch::kCPU).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TeacherTest, TheCacheRunsTheTeacherOnceOverTheSet) {
  const fixtures::BaseModel t = fixtures::Builtin("cnn-small", 4);
  auto teacher = Teacher::Create(t.module, t.metadata, {1, 28, 28}, 4, torch::kCPU);
  ASSERT_TRUE(teacher.ok()) << teacher.status();
  const torch::Tensor images = RandomImages(10);
  TeacherLogitCache cache(teacher->get(), images, /*batch_size=*/4);
  EXPECT_FALSE(cache.built());
  const torch::Tensor rows = torch::tensor({7, 0, 3}, torch::kLong);
  const torch::Tensor first = cache.Rows(rows);
  EXPECT_TRUE(cache.built());
  // 10 images in batches of 4: three passes, and none for later lookups.
  EXPECT_EQ((*teacher)->forward_batches(), 3);
  const torch::Tensor again = cache.Rows(torch::tensor({3, 9}, torch::kLong));
  EXPECT_EQ((*teacher)->forward_batches(), 3);
  // The cached rows are what the teacher says of those very images.
  const torch::Tensor direct =
      (*teacher)->Logits(imaging::Normalizer::ToUnit(images.index_select(0, rows)));
  EXPECT_TRUE(torch::allclose(first, direct, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(again[0], first[2], 1e-6, 1e-7));
}

}  // namespace
}  // namespace kaizen::training
