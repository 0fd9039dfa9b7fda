#include "server/sandbox/torchscript_precheck.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/sandbox/zip_directory.h"
#include "tests/test_util/zip_builder.h"

namespace kaizen::sandbox {
namespace {

using test_util::MakeZip;
using ::testing::HasSubstr;

const std::string kResNet18 = KAIZEN_FIXTURE_DIR "/resnet18.pt";

TEST(TorchScriptPrecheckTest, ARealTorchScriptFilePasses) {
  EXPECT_TRUE(PrecheckTorchScriptFile(kResNet18, {}).ok());
}

TEST(TorchScriptPrecheckTest, AMissingFileIsNotFound) {
  EXPECT_EQ(PrecheckTorchScriptFile(KAIZEN_FIXTURE_DIR "/absent.pt", {}).code(),
            absl::StatusCode::kNotFound);
}

TEST(TorchScriptPrecheckTest, AnOversizedPickleIsRefusedBeforeItIsScanned) {
  const std::string zip = MakeZip({{"m/data.pkl", std::string(4096, 'x')}});
  TorchScriptLimits limits;
  limits.max_pickle_bytes = 1024;
  absl::Status st = PrecheckTorchScriptArchive(zip.size(), ReadFromMemory(zip), limits);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("m/data.pkl"));
}

TEST(TorchScriptPrecheckTest, RefusesArchiveWithoutDataPkl) {
  const std::string zip = MakeZip({{"m/code/x.py", "def f(): pass"}});
  absl::Status st = PrecheckTorchScriptArchive(zip.size(), ReadFromMemory(zip), {});
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr("no data.pkl"));
}

TEST(TorchScriptPrecheckTest, NamesThePickleThatNestsTooDeep) {
  std::string nested = "\x80\x02";
  for (int i = 0; i < 1000; ++i) nested += "](";
  nested += "]" + std::string(1000, 'e') + ".";
  const std::string zip = MakeZip({{"m/data.pkl", nested}});
  absl::Status st = PrecheckTorchScriptArchive(zip.size(), ReadFromMemory(zip), {});
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr("member \"m/data.pkl\""));
  EXPECT_THAT(st.message(), HasSubstr("nest deeper than 200"));
}

}  // namespace
}  // namespace kaizen::sandbox
