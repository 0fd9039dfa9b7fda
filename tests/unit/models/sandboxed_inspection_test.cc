#include "server/models/sandboxed_inspection.h"

#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/common/atomic_file.h"
#include "tests/test_util/python.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::models {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

std::string ReadAll(const std::string& path) {
  std::string bytes;
  EXPECT_TRUE(common::ReadFile(path, &bytes).ok()) << path;
  return bytes;
}

// The hostile models of tests/fixtures/hostile_models.py, written once for
// the suite, with a canary file that from_file.pt tries to overwrite.
class SandboxedInspectionTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test_util::TempDir();
    canary_ = dir_->File("canary.db");
    std::ofstream(canary_) << "the catalogue";
    const absl::StatusOr<std::string> written =
        test_util::RunPythonFixture("hostile_models.py", {dir_->path(), canary_});
    ASSERT_TRUE(written.ok()) << written.status();
  }
  static void TearDownTestSuite() { delete dir_; }

  static std::string Model(const std::string& name) { return dir_->File(name); }

  static SandboxOptions Options() {
    SandboxOptions o;
    o.inspector_path = KAIZEN_BINARY_DIR "/kaizen-model-inspector";
    o.serving_batch_size = 4;
    return o;
  }

  static absl::StatusOr<kaizen::v1::Model> Inspect(const std::string& name,
                                                   SandboxOptions o = Options()) {
    kaizen::v1::UploadModelHeader header;
    header.add_input_shape(1);
    header.add_input_shape(8);
    header.add_input_shape(8);
    return InspectInSandbox(Model(name), header, o);
  }

  static test_util::TempDir* dir_;
  static std::string canary_;
};

test_util::TempDir* SandboxedInspectionTest::dir_ = nullptr;
std::string SandboxedInspectionTest::canary_;

TEST_F(SandboxedInspectionTest, AcceptsAGoodModel) {
  absl::StatusOr<kaizen::v1::Model> model = Inspect("good.pt");
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->head().module_path(), "fc");
  EXPECT_EQ(model->head().out_features(), 2);
  EXPECT_EQ(model->parameter_count(), 64 * 2 + 2);
}

TEST_F(SandboxedInspectionTest, AcceptsTorchvisionResnet18AtTheServingBatch) {
  kaizen::v1::UploadModelHeader header;
  absl::StatusOr<kaizen::v1::Model> model =
      InspectInSandbox(KAIZEN_FIXTURE_DIR "/resnet18.pt", header, Options());
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->head().out_features(), 1000);
}

TEST_F(SandboxedInspectionTest, RefusesFileOperatorsAndTheFileIsUntouched) {
  absl::StatusOr<kaizen::v1::Model> model = Inspect("from_file.pt");
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(model.status().message(), HasSubstr("operator aten::from_file"));
  EXPECT_EQ(ReadAll(canary_), "the catalogue");
}

TEST_F(SandboxedInspectionTest, EvenWithTheOperatorAllowedTheSandboxBlocksTheWrite) {
  SandboxOptions o = Options();
  o.extra_operators = {"aten::from_file", "aten::zero_", "aten::sum"};
  absl::StatusOr<kaizen::v1::Model> model = Inspect("from_file.pt", o);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadAll(canary_), "the catalogue");
}

TEST_F(SandboxedInspectionTest, AnEndlessForwardIsStoppedByTheCpuLimit) {
  SandboxOptions o = Options();
  o.cpu_seconds = 2;
  o.timeout = absl::Seconds(60);
  const absl::Time start = absl::Now();
  absl::StatusOr<kaizen::v1::Model> model = Inspect("endless.pt", o);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(model.status().message(), HasSubstr("more than 2 CPU seconds"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
}

TEST_F(SandboxedInspectionTest, AnEndlessForwardIsStoppedByTheWallClock) {
  SandboxOptions o = Options();
  o.timeout = absl::Seconds(2);
  absl::StatusOr<kaizen::v1::Model> model = Inspect("endless.pt", o);
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(model.status().message(), HasSubstr("did not finish within 2s"));
}

TEST_F(SandboxedInspectionTest, AMemoryBombHitsTheMemoryLimit) {
  SandboxOptions o = Options();
  o.memory_bytes = int64_t{2} << 30;  // the bomb asks for 6 GiB
  absl::StatusOr<kaizen::v1::Model> model = Inspect("memory_bomb.pt", o);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(model.status().message(), HasSubstr("allocate"));
}

TEST_F(SandboxedInspectionTest, ALoaderCrashIsContained) {
  // With the pickle depth check off, torch::jit::load overflows its stack.
  SandboxOptions o = Options();
  o.max_pickle_depth = 10'000'000;
  absl::StatusOr<kaizen::v1::Model> model = Inspect("deep_pickle.pt", o);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(model.status().message(), AllOf(HasSubstr("crashed"), HasSubstr("SIGSEGV")));
  // With it on, the file is refused before LibTorch reads it.
  model = Inspect("deep_pickle.pt");
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(model.status().message(), HasSubstr("nest deeper than 200"));
}

TEST_F(SandboxedInspectionTest, AZipBombIsRefusedBeforeLoading) {
  absl::StatusOr<kaizen::v1::Model> model = Inspect("zip_bomb.pt");
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(model.status().message(), HasSubstr("ratio limit"));
}

TEST_F(SandboxedInspectionTest, AModelThatIgnoresTheBatchIsRefused) {
  absl::StatusOr<kaizen::v1::Model> model = Inspect("batch_mismatch.pt");
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(model.status().message(), HasSubstr("at batch size 4"));
}

TEST_F(SandboxedInspectionTest, PrintsDoNotCorruptTheAnswer) {
  // prim::Print is refused by default (it would flood the server's stdout);
  // allowed, what it prints must not reach the answer.
  EXPECT_THAT(Inspect("chatty.pt").status().message(), HasSubstr("operator prim::Print"));
  SandboxOptions o = Options();
  o.extra_operators = {"prim::Print"};
  absl::StatusOr<kaizen::v1::Model> model = Inspect("chatty.pt", o);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->head().out_features(), 2);
}

TEST_F(SandboxedInspectionTest, InputShapeIsBoundedByMaxImagePixels) {
  kaizen::v1::UploadModelHeader header;
  header.add_input_shape(1);
  header.add_input_shape(100000);
  header.add_input_shape(100000);
  absl::StatusOr<kaizen::v1::Model> model = InspectInSandbox(Model("good.pt"), header, Options());
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(model.status().message(), HasSubstr("--max_image_pixels"));
}

TEST_F(SandboxedInspectionTest, AMissingInspectorIsAnInternalError) {
  SandboxOptions o = Options();
  o.inspector_path = "/nonexistent/kaizen-model-inspector";
  absl::StatusOr<kaizen::v1::Model> model = Inspect("good.pt", o);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInternal) << model.status();
  EXPECT_THAT(model.status().message(), HasSubstr("/nonexistent/kaizen-model-inspector"));
}

}  // namespace
}  // namespace kaizen::models
