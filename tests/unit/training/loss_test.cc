#include "server/training/loss.h"

#include <torch/torch.h>

#include <cmath>

#include "gtest/gtest.h"

namespace kaizen::training {
namespace {

TEST(LossTest, LabelSmoothingLoss) {
  const torch::Tensor logits = torch::tensor({{2.0f, 0.0f, -1.0f}, {0.5f, 0.5f, 3.0f}});
  const torch::Tensor targets = torch::tensor({0, 1}, torch::kLong);
  // By hand for the first row: p = softmax(2, 0, -1).
  const double z = std::exp(2.0) + 1.0 + std::exp(-1.0);
  const double lp0 = 2.0 - std::log(z), lp1 = -std::log(z), lp2 = -1.0 - std::log(z);
  const double row0 = 0.8 * -lp0 + 0.2 * -(lp0 + lp1 + lp2) / 3.0;
  EXPECT_NEAR(
      SmoothedCrossEntropy(logits.narrow(0, 0, 1), targets.narrow(0, 0, 1), 0.2).item<double>(),
      row0, 1e-5);
  // Agrees with LibTorch's own label smoothing, and is plain CE at 0.
  namespace F = torch::nn::functional;
  EXPECT_NEAR(SmoothedCrossEntropy(logits, targets, 0.2).item<double>(),
              F::cross_entropy(logits, targets, F::CrossEntropyFuncOptions().label_smoothing(0.2))
                  .item<double>(),
              1e-5);
  EXPECT_NEAR(SmoothedCrossEntropy(logits, targets, 0.0).item<double>(),
              F::cross_entropy(logits, targets).item<double>(), 1e-6);
}

}  // namespace
}  // namespace kaizen::training
