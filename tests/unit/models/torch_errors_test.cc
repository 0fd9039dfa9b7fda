#include "server/models/torch_errors.h"

#include <c10/util/Exception.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/script.h>

#include <stdexcept>

namespace kaizen::models {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(TorchErrorsTest, AC10ErrorLosesItsBacktrace) {
  try {
    torch::zeros({2, 3}).matmul(torch::zeros({4, 5}));
    FAIL() << "matmul of mismatched shapes did not throw";
  } catch (const c10::Error& e) {
    const std::string summary = TorchErrorSummary(e);
    EXPECT_THAT(summary, HasSubstr("shapes cannot be multiplied"));
    EXPECT_THAT(summary, Not(HasSubstr("\n")));
    EXPECT_THAT(summary, Not(HasSubstr("frame #")));
  }
}

TEST(TorchErrorsTest, AnInterpreterTracebackGivesItsLastLine) {
  const std::runtime_error e(
      "The following operation failed in the TorchScript interpreter.\n"
      "Traceback of TorchScript (most recent call last):\n"
      "  File \"code/__torch__.py\", line 8, in forward\n"
      "    return torch.matmul(x, w)\n"
      "RuntimeError: mat1 and mat2 shapes cannot be multiplied (1x3 and 4x5)\n");
  EXPECT_EQ(TorchErrorSummary(e), "mat1 and mat2 shapes cannot be multiplied (1x3 and 4x5)");
}

TEST(TorchErrorsTest, OtherExceptionsGiveTheirFirstLine) {
  EXPECT_EQ(TorchErrorSummary(std::runtime_error("  first line \nsecond line")), "first line");
  EXPECT_EQ(TorchErrorSummary(std::runtime_error("")), "unknown error");
}

}  // namespace
}  // namespace kaizen::models
