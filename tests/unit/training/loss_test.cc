#include "server/training/loss.h"

#include <torch/torch.h>

#include <cmath>
#include <utility>

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

// softmax(z / t) of a two-class row, by hand.
std::pair<double, double> Soft(double z0, double z1, double t) {
  const double a = std::exp(z0 / t), b = std::exp(z1 / t);
  return {a / (a + b), b / (a + b)};
}

TEST(LossTest, DistillationLossMatchesAHandComputation) {
  // One row: student logits (0.5, 0), teacher (2, 0), label 1, T = 2.
  const torch::Tensor student = torch::tensor({{0.5f, 0.0f}});
  const torch::Tensor teacher = torch::tensor({{2.0f, 0.0f}});
  const torch::Tensor label = torch::tensor({1}, torch::kLong);
  const auto [t0, t1] = Soft(2.0, 0.0, 2.0);  // (0.7311, 0.2689)
  const auto [s0, s1] = Soft(0.5, 0.0, 2.0);  // (0.5622, 0.4378)
  const double kl = t0 * std::log(t0 / s0) + t1 * std::log(t1 / s1);
  EXPECT_NEAR(kl, 0.06097, 1e-5);
  // Plain cross-entropy of label 1 at T = 1, and with smoothing 0.1.
  const auto [p0, p1] = Soft(0.5, 0.0, 1.0);
  const double ce = -std::log(p1);
  const double smoothed = 0.9 * ce + 0.1 * -(std::log(p0) + std::log(p1)) / 2;
  EXPECT_NEAR(DistillationLoss(student, teacher, label, 2.0, 1.0, 0.0).item<double>(), 4 * kl,
              1e-5);
  EXPECT_NEAR(DistillationLoss(student, teacher, label, 2.0, 0.0, 0.0).item<double>(), ce, 1e-5);
  EXPECT_NEAR(DistillationLoss(student, teacher, label, 2.0, 0.7, 0.1).item<double>(),
              0.7 * 4 * kl + 0.3 * smoothed, 1e-5);
  // The same teacher and student give no soft loss at any temperature.
  EXPECT_NEAR(DistillationLoss(teacher, teacher, label, 4.0, 1.0, 0.0).item<double>(), 0, 1e-6);
}

TEST(LossTest, DistillationGradientIsTemperatureTimesTheSoftDifference) {
  // d/dz [T^2 KL(p_t || softmax(z / T))] = T (softmax(z / T) - p_t), over
  // the batch mean: the T^2 factor keeps the gradient's scale at any T.
  const torch::Tensor student =
      torch::tensor({{0.5f, 0.0f, -1.0f}, {1.0f, 2.0f, 0.0f}}).set_requires_grad(true);
  const torch::Tensor teacher =
      torch::tensor({{2.0f, 0.0f, 1.0f}, {0.0f, 3.0f, -2.0f}}).set_requires_grad(true);
  const torch::Tensor labels = torch::tensor({0, 1}, torch::kLong);
  const double t = 3.0;
  DistillationLoss(student, teacher, labels, t, 1.0, 0.1).backward();
  const torch::Tensor expected =
      t * (torch::softmax(student.detach() / t, 1) - torch::softmax(teacher.detach() / t, 1)) / 2;
  EXPECT_TRUE(torch::allclose(student.grad(), expected, 1e-5, 1e-6)) << student.grad();
  // The teacher learns nothing from the student.
  EXPECT_FALSE(teacher.grad().defined());
}

TEST(LossTest, IncrementalLossIsCrossEntropyPlusDistillationOnOldClasses) {
  // Two old classes and one new; the previous model saw only the old two.
  const torch::Tensor student = torch::tensor({{0.5f, 0.0f, 1.0f}, {1.0f, -1.0f, 0.0f}});
  const torch::Tensor previous = torch::tensor({{2.0f, 0.0f}, {0.0f, 1.0f}});
  const torch::Tensor targets = torch::tensor({2, 0}, torch::kLong);
  const double t = 2.0, w = 0.5;
  // By hand: the KL of the softened old-class distributions, per row.
  double kl = 0;
  for (int row = 0; row < 2; ++row) {
    const auto [p0, p1] = Soft(previous[row][0].item<double>(), previous[row][1].item<double>(), t);
    const auto [q0, q1] = Soft(student[row][0].item<double>(), student[row][1].item<double>(), t);
    kl += p0 * std::log(p0 / q0) + p1 * std::log(p1 / q1);
  }
  kl /= 2;
  const double ce = SmoothedCrossEntropy(student, targets, 0.1).item<double>();
  EXPECT_NEAR(IncrementalLoss(student, previous, targets, t, w, 0.1).item<double>(),
              ce + w * t * t * kl, 1e-5);
  // Without the previous logits, or at weight 0: the cross-entropy alone.
  EXPECT_NEAR(IncrementalLoss(student, torch::Tensor(), targets, t, w, 0.1).item<double>(), ce,
              1e-6);
  EXPECT_NEAR(IncrementalLoss(student, previous, targets, t, 0, 0.1).item<double>(), ce, 1e-6);
  // The distillation term reuses DISTILL's soft-target loss.
  EXPECT_NEAR(SoftTargetLoss(student.narrow(1, 0, 2), previous, t).item<double>(), t * t * kl,
              1e-5);
}

}  // namespace
}  // namespace kaizen::training
