#include "server/training/parameter_init.h"

#include <gtest/gtest.h>
#include <torch/script.h>

#include <cmath>

#include "server/models/builtin_models.h"

namespace kaizen::training {
namespace {

torch::jit::Module Model() {
  absl::StatusOr<torch::jit::Module> m = models::CreateBuiltinModel("resnet-small", {});
  EXPECT_TRUE(m.ok()) << m.status();
  return *m;
}

// Every parameter and buffer set to 5, so that each one the function touches shows.
void Spoil(torch::jit::Module& m) {
  torch::NoGradGuard no_grad;
  for (const auto& p : m.named_parameters()) p.value.fill_(5);
  for (const auto& b : m.named_buffers()) {
    if (b.value.is_floating_point()) b.value.fill_(5);
  }
}

TEST(ParameterInitTest, BatchNormStartsFresh) {
  torch::jit::Module m = Model();
  Spoil(m);
  ReinitializeParameters(m, 1);
  int batch_norms = 0;
  for (const auto& sub : m.named_modules()) {
    if (!sub.value.hasattr("running_mean")) continue;
    ++batch_norms;
    EXPECT_TRUE(sub.value.attr("weight").toTensor().eq(1).all().item<bool>()) << sub.name;
    EXPECT_TRUE(sub.value.attr("bias").toTensor().eq(0).all().item<bool>()) << sub.name;
    EXPECT_TRUE(sub.value.attr("running_mean").toTensor().eq(0).all().item<bool>()) << sub.name;
    EXPECT_TRUE(sub.value.attr("running_var").toTensor().eq(1).all().item<bool>()) << sub.name;
  }
  EXPECT_GT(batch_norms, 0);
}

TEST(ParameterInitTest, LinearAndConvolutionFollowPyTorchsDefaults) {
  torch::jit::Module m = Model();
  Spoil(m);
  ReinitializeParameters(m, 1);
  torch::jit::Module fc = m.attr("fc").toModule();
  const torch::Tensor w = fc.attr("weight").toTensor();
  const double bound = 1.0 / std::sqrt(static_cast<double>(w.size(1)));
  EXPECT_LE(w.abs().max().item<double>(), bound);
  EXPECT_LE(fc.attr("bias").toTensor().abs().max().item<double>(), bound);
  EXPECT_GT(w.std().item<double>(), 0);
  for (const auto& p : m.named_parameters()) {
    if (p.value.dim() != 4) continue;
    // Kaiming normal, fan_out: std = sqrt(2 / (out_channels * kh * kw)).
    const double expected = std::sqrt(2.0 / static_cast<double>(p.value.numel() / p.value.size(1)));
    if (p.value.numel() < 1000) continue;  // too few for a stable estimate
    EXPECT_NEAR(p.value.std().item<double>(), expected, 0.2 * expected) << p.name;
  }
}

TEST(ParameterInitTest, TheSeedDecides) {
  torch::jit::Module a = Model(), b = Model(), c = Model();
  ReinitializeParameters(a, 7);
  ReinitializeParameters(b, 7);
  ReinitializeParameters(c, 8);
  bool any_differs = false;
  auto pa = a.named_parameters(), pb = b.named_parameters(), pc = c.named_parameters();
  for (auto ia = pa.begin(), ib = pb.begin(), ic = pc.begin(); ia != pa.end(); ++ia, ++ib, ++ic) {
    EXPECT_TRUE(torch::equal((*ia).value, (*ib).value)) << (*ia).name;
    any_differs |= !torch::equal((*ia).value, (*ic).value);
  }
  EXPECT_TRUE(any_differs);
}

}  // namespace
}  // namespace kaizen::training
