// ForwardCut on the built-in models and on small scripted modules: the two
// halves compose to forward, gradients reach only the suffix's parameters,
// and cuts that would change what forward computes are refused.
#include "server/training/forward_cut.h"

#include <torch/script.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/models/builtin_models.h"

namespace kaizen::training {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

torch::jit::Module Builtin(const std::string& name) {
  models::BuiltinOptions o;
  o.in_channels = 3;
  o.input_size = 32;
  o.num_classes = 4;
  o.seed = 3;
  absl::StatusOr<torch::jit::Module> m = models::CreateBuiltinModel(name, o);
  EXPECT_TRUE(m.ok()) << m.status();
  return *m;
}

torch::jit::Module Linear(int64_t in, int64_t out, uint64_t seed) {
  torch::manual_seed(seed);
  torch::jit::Module m("Lin");
  m.register_parameter("weight", torch::randn({out, in}), false);
  m.register_parameter("bias", torch::randn({out}), false);
  m.define("def forward(self, x):\n    return torch.linear(x, self.weight, self.bias)\n");
  return m;
}

// a -> relu -> b -> c, with optional extra code in forward.
torch::jit::Module Chain(const std::string& forward) {
  torch::jit::Module m("Chain");
  m.register_module("a", Linear(6, 5, 1));
  m.register_module("b", Linear(5, 5, 2));
  m.register_module("c", Linear(5, 3, 3));
  m.define(forward);
  return m;
}

TEST(ForwardCutTest, PrefixThenSuffixIsForwardOnTheBuiltins) {
  const torch::Tensor x = torch::rand({4, 3, 32, 32});
  for (const auto& [name, child] :
       std::vector<std::pair<std::string, std::string>>{{"resnet-small", "layer3"},
                                                        {"resnet-small", "layer1"},
                                                        {"resnet-small", "fc"},
                                                        {"cnn-small", "features.block3"},
                                                        {"cnn-small", "fc"}}) {
    torch::jit::Module m = Builtin(name);
    m.eval();
    torch::NoGradGuard no_grad;
    absl::StatusOr<ForwardCut> cut = ForwardCut::Before(m, child);
    ASSERT_TRUE(cut.ok()) << name << " " << child << ": " << cut.status();
    const torch::Tensor want = m.forward({x}).toTensor();
    const torch::Tensor got = cut->Suffix(cut->Prefix(x));
    EXPECT_TRUE(torch::equal(got, want)) << name << " before " << child;
  }
}

TEST(ForwardCutTest, ThePrefixNamesTheModulesItRuns) {
  torch::jit::Module m = Builtin("resnet-small");
  absl::StatusOr<ForwardCut> cut = ForwardCut::Before(m, "layer3");
  ASSERT_TRUE(cut.ok()) << cut.status();
  EXPECT_THAT(cut->prefix_modules(), ElementsAre("stem", "layer1", "layer2"));
  absl::StatusOr<ForwardCut> inner = ForwardCut::Before(Builtin("cnn-small"), "features.block3");
  ASSERT_TRUE(inner.ok()) << inner.status();
  EXPECT_THAT(inner->prefix_modules(), ElementsAre("features.block1", "features.block2"));
  const torch::Tensor h = inner->Prefix(torch::rand({2, 3, 32, 32}));
  EXPECT_EQ(h.dim(), 4);
}

TEST(ForwardCutTest, TrainingThroughTheSuffixTrainsOnlyItsLayers) {
  torch::jit::Module m = Builtin("resnet-small");
  m.train();
  absl::StatusOr<ForwardCut> cut = ForwardCut::Before(m, "layer3");
  ASSERT_TRUE(cut.ok()) << cut.status();
  torch::Tensor h;
  {
    torch::NoGradGuard no_grad;
    h = cut->Prefix(torch::rand({4, 3, 32, 32}));
  }
  cut->Suffix(h).sum().backward();
  for (const auto& p : m.named_parameters()) {
    const bool above = p.name.rfind("layer3.", 0) == 0 || p.name.rfind("fc.", 0) == 0;
    EXPECT_EQ(p.value.grad().defined(), above) << p.name;
  }
}

TEST(ForwardCutTest, AConnectionOverTheCutIsRefused) {
  // The input itself read past the cut.
  torch::jit::Module skip_input = Chain(R"(
def forward(self, x):
    h = torch.relu(self.a.forward(x))
    return self.c.forward(self.b.forward(h)) + torch.sum(x)
)");
  absl::StatusOr<ForwardCut> refused = ForwardCut::Before(skip_input, "b");
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("read forward's input"));
  // A value from before the cut read past it.
  torch::jit::Module skip_value = Chain(R"(
def forward(self, x):
    a = self.a.forward(x)
    h = torch.relu(a)
    return self.c.forward(self.b.forward(h) + a)
)");
  refused = ForwardCut::Before(skip_value, "b");
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("computed before it"));
  // The cut's own input may be read past it: a residual around `b`.
  torch::jit::Module residual = Chain(R"(
def forward(self, x):
    h = torch.relu(self.a.forward(x))
    return self.c.forward(self.b.forward(h) + h)
)");
  absl::StatusOr<ForwardCut> cut = ForwardCut::Before(residual, "b");
  ASSERT_TRUE(cut.ok()) << cut.status();
  const torch::Tensor x = torch::rand({3, 6});
  EXPECT_TRUE(torch::allclose(cut->Suffix(cut->Prefix(x)), residual.forward({x}).toTensor()));
}

// A module the prefix calls only inside a conditional is named too, so that
// the trainer checks it like the rest.
TEST(ForwardCutTest, ThePrefixNamesModulesCalledInsideConditionals) {
  torch::jit::Module m = Chain(R"(
def forward(self, x):
    h = self.a.forward(x)
    if bool(h.sum() > 0.0):
        h = torch.relu(h)
    else:
        h = self.b.forward(torch.relu(h))
    return self.c.forward(h)
)");
  absl::StatusOr<ForwardCut> cut = ForwardCut::Before(m, "c");
  ASSERT_TRUE(cut.ok()) << cut.status();
  EXPECT_THAT(cut->prefix_modules(), ElementsAre("a", "b"));
}

TEST(ForwardCutTest, AChildCalledTwiceConditionallyOrNeverIsRefused) {
  torch::jit::Module twice = Chain(R"(
def forward(self, x):
    return self.c.forward(self.b.forward(self.b.forward(torch.relu(self.a.forward(x)))))
)");
  EXPECT_THAT(std::string(ForwardCut::Before(twice, "b").status().message()), HasSubstr("2 times"));
  torch::jit::Module conditional = Chain(R"(
def forward(self, x):
    h = torch.relu(self.a.forward(x))
    if bool(h.sum() > 0):
        h = self.b.forward(h)
    return self.c.forward(h)
)");
  EXPECT_EQ(ForwardCut::Before(conditional, "b").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ForwardCut::Before(Chain(R"(
def forward(self, x):
    return self.c.forward(torch.relu(self.a.forward(x)))
)"),
                               "b")
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ForwardCutTest, ModulesThatReadTheirTrainingFlagBehaveAsInEvalOnlyInEval) {
  torch::jit::Module m = Builtin("resnet-small");  // BatchNorm reads `training`
  m.train();
  EXPECT_FALSE(BehavesAsInEval(m));
  torch::jit::Module stem = m.attr("stem").toModule();
  stem.eval();
  EXPECT_TRUE(BehavesAsInEval(stem));
  // A parameterless module left in training mode that never reads the flag.
  torch::jit::Module chain = Chain(R"(
def forward(self, x):
    return self.c.forward(self.b.forward(torch.relu(self.a.forward(x))))
)");
  chain.train();
  EXPECT_TRUE(BehavesAsInEval(chain));
}

}  // namespace
}  // namespace kaizen::training
