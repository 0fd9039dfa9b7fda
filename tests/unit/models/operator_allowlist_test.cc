#include "server/models/operator_allowlist.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/script.h>

#include <algorithm>
#include <cstring>

#include "server/models/builtin_models.h"

namespace kaizen::models {
namespace {

using ::testing::HasSubstr;

torch::jit::Module Scripted(const std::string& source) {
  torch::jit::Module m("Model");
  m.define(source);
  return m;
}

TEST(OperatorAllowlistTest, TheListIsSortedAndHoldsTheBasics) {
  absl::Span<const char* const> ops = AllowedOperators();
  EXPECT_TRUE(std::is_sorted(ops.begin(), ops.end(),
                             [](const char* a, const char* b) { return std::strcmp(a, b) < 0; }));
  for (const char* op : {"aten::add", "aten::relu", "prim::Constant"}) {
    EXPECT_TRUE(std::any_of(ops.begin(), ops.end(), [op](const char* o) {
      return std::strcmp(o, op) == 0;
    })) << op;
  }
}

TEST(OperatorAllowlistTest, PureTensorCodePasses) {
  EXPECT_TRUE(CheckOperators(Scripted(R"(
def forward(self, x):
    return torch.relu(x) + 1
)"),
                             {})
                  .ok());
}

TEST(OperatorAllowlistTest, EveryBuiltinArchitecturePasses) {
  for (const char* name : {"cnn-small", "resnet-small"}) {
    absl::StatusOr<torch::jit::Module> m = CreateBuiltinModel(name, BuiltinOptions());
    ASSERT_TRUE(m.ok()) << m.status();
    absl::Status s = CheckOperators(*m, {});
    EXPECT_TRUE(s.ok()) << name << ": " << s;
  }
}

TEST(OperatorAllowlistTest, AnOperatorOffTheListIsNamedWithItsFunction) {
  // Never called from forward: every function of the module counts.
  torch::jit::Module m = Scripted(R"(
def forward(self, x):
    return x

def unused(self, x):
    return torch.cholesky(x)
)");
  absl::Status s = CheckOperators(m, {});
  ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("operator aten::cholesky"));
  EXPECT_THAT(s.message(), HasSubstr("unused"));
  EXPECT_THAT(s.message(), HasSubstr("--model_extra_operators"));
  // The operator can be allowed explicitly.
  EXPECT_TRUE(CheckOperators(m, {"aten::cholesky"}).ok());
}

}  // namespace
}  // namespace kaizen::models
