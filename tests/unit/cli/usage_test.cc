#include "client/cli/usage.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/flags/flag.h"

ABSL_FLAG(int, usage_test_count, 1, "a flag for CheckFlags to check");
ABSL_FLAG(bool, usage_test_switch, false, "a boolean flag for CheckFlags to check");

namespace kaizen::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// argv as main() gets it: mutable strings and a terminating nullptr.
class Argv {
 public:
  explicit Argv(std::vector<std::string> args) : args_(std::move(args)) {
    for (std::string& a : args_) ptrs_.push_back(a.data());
    ptrs_.push_back(nullptr);
  }
  int argc() const { return static_cast<int>(args_.size()); }
  char** argv() { return ptrs_.data(); }
  std::vector<std::string> Remaining(int argc) const {
    return std::vector<std::string>(ptrs_.begin(), ptrs_.begin() + argc);
  }

 private:
  std::vector<std::string> args_;
  std::vector<char*> ptrs_;
};

TEST(UsageTest, UsageErrorsAreMarkedInvalidArgument) {
  absl::Status s = UsageError("bad");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(IsUsageError(s));
  EXPECT_FALSE(IsUsageError(absl::InvalidArgumentError("bad")));
}

TEST(UsageTest, HelpIsAskedByFlagOrFirstWordButNotAfterDashDash) {
  Argv flag({"kaizenctl", "jobs", "list", "-h"});
  EXPECT_TRUE(WantsHelp(flag.argc(), flag.argv()));
  Argv word({"kaizenctl", "help"});
  EXPECT_TRUE(WantsHelp(word.argc(), word.argv()));
  Argv later({"kaizenctl", "models", "help"});  // a model named "help"
  EXPECT_FALSE(WantsHelp(later.argc(), later.argv()));
  Argv escaped({"kaizenctl", "predict", "m", "--", "--help"});
  EXPECT_FALSE(WantsHelp(escaped.argc(), escaped.argv()));
}

TEST(UsageTest, CheckFlagsNamesTheFirstBadFlag) {
  Argv good({"kaizenctl", "--usage_test_count=3", "--nousage_test_switch", "x"});
  EXPECT_TRUE(CheckFlags(good.argc(), good.argv()).ok());
  Argv unknown({"kaizenctl", "--usage_test_colour=red"});
  absl::Status s = CheckFlags(unknown.argc(), unknown.argv());
  EXPECT_TRUE(IsUsageError(s));
  EXPECT_THAT(s.message(), HasSubstr("unknown flag --usage_test_colour"));
  Argv bad_value({"kaizenctl", "--usage_test_count", "many"});
  s = CheckFlags(bad_value.argc(), bad_value.argv());
  EXPECT_THAT(s.message(), HasSubstr("bad value \"many\" for --usage_test_count"));
  Argv no_value({"kaizenctl", "--usage_test_count"});
  EXPECT_THAT(CheckFlags(no_value.argc(), no_value.argv()).message(), HasSubstr("needs a value"));
  Argv escaped({"kaizenctl", "--", "--whatever"});
  EXPECT_TRUE(CheckFlags(escaped.argc(), escaped.argv()).ok());
}

TEST(UsageTest, TakeVersionFlagRemovesEveryFormAndKeepsTheLast) {
  Argv a(
      {"kaizenctl", "predict", "--version=2", "m", "--version", "5", "x.png", "--", "--version=9"});
  int argc = a.argc();
  int64_t version = -1;
  ASSERT_TRUE(TakeVersionFlag(&argc, a.argv(), &version).ok());
  EXPECT_EQ(version, 5);
  EXPECT_THAT(a.Remaining(argc),
              ElementsAre("kaizenctl", "predict", "m", "x.png", "--", "--version=9"));
  EXPECT_EQ(a.argv()[argc], nullptr);
}

TEST(UsageTest, TakeVersionFlagRefusesNonNumbers) {
  Argv a({"kaizenctl", "--version=latest"});
  int argc = a.argc();
  int64_t version = 0;
  absl::Status s = TakeVersionFlag(&argc, a.argv(), &version);
  EXPECT_TRUE(IsUsageError(s));
  EXPECT_THAT(s.message(), HasSubstr("\"latest\""));
  // "--version" followed by a non-number is left for Abseil's own flag.
  Argv b({"kaizenctl", "--version", "x"});
  argc = b.argc();
  ASSERT_TRUE(TakeVersionFlag(&argc, b.argv(), &version).ok());
  EXPECT_EQ(argc, 3);
  EXPECT_EQ(version, 0);
}

TEST(UsageTest, DefaultServerComesFromTheEnvironment) {
  // Whatever the environment held is put back for the next tests in this
  // process (a CTest shard).
  const char* held = std::getenv("KAIZEN_SERVER");
  absl::Cleanup restore = [saved = held ? std::optional<std::string>(held) : std::nullopt] {
    if (saved) {
      ::setenv("KAIZEN_SERVER", saved->c_str(), 1);
    } else {
      ::unsetenv("KAIZEN_SERVER");
    }
  };
  ::unsetenv("KAIZEN_SERVER");
  EXPECT_EQ(DefaultServer(), "localhost:50051");
  ::setenv("KAIZEN_SERVER", "kaizen.example:443", 1);
  EXPECT_EQ(DefaultServer(), "kaizen.example:443");
}

}  // namespace
}  // namespace kaizen::cli
