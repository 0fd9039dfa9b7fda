#include "server/imaging/normalizer.h"

#include <torch/torch.h>

#include "gtest/gtest.h"

namespace kaizen::imaging {
namespace {

TEST(NormalizerTest, NormalizesWithMetadataStatistics) {
  kaizen::v1::Normalization n;
  n.add_mean(0.5f);
  n.add_std(0.25f);
  Normalizer normalizer(n, 3, torch::kCPU);
  const torch::Tensor x = torch::full({1, 3, 2, 2}, 255, torch::kUInt8);
  EXPECT_NEAR(normalizer.Normalize(Normalizer::ToUnit(x)).max().item<double>(), 2.0, 1e-6);
}

TEST(NormalizerTest, EmptyNormalizationOnlyScalesToUnit) {
  Normalizer normalizer(kaizen::v1::Normalization(), 1, torch::kCPU);
  const torch::Tensor x = torch::full({1, 1, 2, 2}, 51, torch::kUInt8);
  EXPECT_NEAR(normalizer.Normalize(Normalizer::ToUnit(x)).max().item<double>(), 0.2, 1e-6);
}

TEST(NormalizerTest, PerChannelStatistics) {
  kaizen::v1::Normalization n;
  for (float m : {0.0f, 0.5f, 1.0f}) n.add_mean(m);
  for (float s : {1.0f, 0.5f, 0.0f}) n.add_std(s);  // a zero std counts as 1
  Normalizer normalizer(n, 3, torch::kCPU);
  const torch::Tensor out =
      normalizer.Normalize(Normalizer::ToUnit(torch::full({1, 3, 1, 1}, 255, torch::kUInt8)));
  EXPECT_NEAR(out[0][0][0][0].item<double>(), 1.0, 1e-6);
  EXPECT_NEAR(out[0][1][0][0].item<double>(), 1.0, 1e-6);
  EXPECT_NEAR(out[0][2][0][0].item<double>(), 0.0, 1e-6);
}

}  // namespace
}  // namespace kaizen::imaging
