// End-to-end tests of evaluation: a real job on Fashion-MNIST with a test
// dataset, through a real server on a loopback port; the stored test result,
// EvaluateModel, and Predict on the same images must all agree.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/lib/kaizen_client.h"
#include "gmock/gmock.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/server/job_helpers.h"
#include "tests/test_util/wait.h"

namespace kaizen {
namespace {

using ::testing::HasSubstr;

class EvaluationE2E : public test_util::JobServerTest {
 protected:
  void SetUp() override { StartServer(); }

  // The images and labels of an IDX pair UploadSubset wrote.
  struct Images {
    std::vector<std::vector<uint8_t>> pixels;  // 28 x 28 each
    std::vector<int> labels;
  };
  Images ReadSubset(const std::string& name) {
    const std::string images = test_util::ReadBinaryFile(files_.File(name + "-images"));
    const std::string labels = test_util::ReadBinaryFile(files_.File(name + "-labels"));
    Images out;
    constexpr size_t kImageHeader = 16, kLabelHeader = 8, kPixels = 28 * 28;
    for (size_t i = 0; kLabelHeader + i < labels.size(); ++i) {
      out.labels.push_back(static_cast<uint8_t>(labels[kLabelHeader + i]));
      const char* p = images.data() + kImageHeader + i * kPixels;
      out.pixels.emplace_back(p, p + kPixels);
    }
    EXPECT_EQ(images.size(), kImageHeader + out.labels.size() * kPixels);
    return out;
  }
};

// A job with a test dataset stores the evaluation of its latest version;
// EvaluateModel gives the same numbers for that version, and its confusion
// matrix is what Predict answers image by image on the same pixels.
TEST_F(EvaluationE2E, TheStoredTestResultEvaluateModelAndPredictAgree) {
  UploadSubset("train", {0, 1, 7}, 40);
  UploadSubset("test", {0, 1, 7}, 30, 0, "t10k");
  auto r = Request("cnn-small", "train", "out", v1::STRATEGY_SCRATCH, 10);
  r.set_test_dataset("test");
  const v1::Job end = WaitForSuccess(Start(r).id());
  ASSERT_EQ(end.state(), v1::JOB_STATE_SUCCEEDED);

  absl::StatusOr<v1::Model> model = s_.client->GetModel("out", end.latest_version());
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_TRUE(model->has_test_evaluation());
  const v1::Evaluation& stored = model->test_evaluation();
  EXPECT_EQ(stored.dataset(), "test");
  EXPECT_EQ(stored.examples(), 90);
  EXPECT_EQ(stored.class_mapping(), "identical");

  absl::StatusOr<v1::Evaluation> e =
      s_.client->EvaluateModel("out", end.latest_version(), "test", /*top_k=*/2);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->version(), end.latest_version());
  EXPECT_EQ(e->top_k(), 2);
  EXPECT_DOUBLE_EQ(e->accuracy(), stored.accuracy());
  EXPECT_NEAR(e->mean_loss(), stored.mean_loss(), 1e-9);
  EXPECT_GE(e->top_k_accuracy(), e->accuracy());
  // The model learned something: better than chance on three classes.
  EXPECT_GT(e->accuracy(), 0.5);

  // Predict, one preprocessed tensor per test image, pinned to the version.
  const Images test = ReadSubset("test");
  ASSERT_EQ(test.labels.size(), 90u);
  const float mean = model->normalization().mean_size() > 0 ? model->normalization().mean(0) : 0;
  const float std = model->normalization().std_size() > 0 ? model->normalization().std(0) : 1;
  v1::PredictRequest p;
  p.set_model("out");
  p.set_version(end.latest_version());
  for (const std::vector<uint8_t>& image : test.pixels) {
    v1::FloatTensor* t = p.add_inputs()->mutable_tensor();
    for (int64_t d : {1, 28, 28}) t->add_shape(d);
    for (uint8_t v : image) t->add_values((static_cast<float>(v) / 255.0f - mean) / std);
  }
  // The version is served once the server has loaded it.
  absl::StatusOr<v1::PredictResponse> answer;
  ASSERT_TRUE(test_util::WaitUntil([&] {
    answer = s_.client->Predict(p);
    return answer.ok();
  })) << answer.status();
  ASSERT_EQ(answer->predictions_size(), 90);
  const int cols = e->predicted_classes_size();
  std::map<std::string, int> column;
  for (int j = 0; j < cols; ++j) column[e->predicted_classes(j)] = j;
  std::vector<int64_t> confusion(static_cast<size_t>(e->classes_size() * cols), 0);
  for (int i = 0; i < 90; ++i) {
    const std::string& label = answer->predictions(i).classes(0).label();
    ASSERT_TRUE(column.count(label)) << label;
    ++confusion[static_cast<size_t>(test.labels[i] * cols + column[label])];
  }
  EXPECT_EQ(confusion, std::vector<int64_t>(e->confusion().begin(), e->confusion().end()));
}

TEST_F(EvaluationE2E, ClassesMatchByNameAndRefusalsNameWhatIsWrong) {
  UploadSubset("train", {0, 1}, 20);
  UploadSubset("other", {0, 5}, 5);
  const v1::Job end =
      WaitForSuccess(Start(Request("cnn-small", "train", "out", v1::STRATEGY_SCRATCH, 1)).id());
  ASSERT_EQ(end.state(), v1::JOB_STATE_SUCCEEDED);

  // The same test images with their classes in the other order: each image
  // is scored against its own class.
  UploadSubset("in-order", {0, 1}, 10, 0, "t10k");
  UploadSubset("swapped", {1, 0}, 10, 0, "t10k", {"class1", "class0"});
  absl::StatusOr<v1::Evaluation> in_order = s_.client->EvaluateModel("out", 0, "in-order");
  absl::StatusOr<v1::Evaluation> swapped = s_.client->EvaluateModel("out", 0, "swapped");
  ASSERT_TRUE(in_order.ok() && swapped.ok()) << in_order.status() << swapped.status();
  EXPECT_EQ(swapped->class_mapping(), "matched by name");
  EXPECT_DOUBLE_EQ(swapped->accuracy(), in_order->accuracy());
  EXPECT_EQ(swapped->classes(0).name(), "class1");
  EXPECT_DOUBLE_EQ(swapped->classes(0).recall(), in_order->classes(1).recall());

  absl::StatusOr<v1::Evaluation> other = s_.client->EvaluateModel("out", 0, "other");
  EXPECT_EQ(other.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(other.status().message(), HasSubstr("\"class5\" is not among the model's classes"));
  EXPECT_EQ(s_.client->EvaluateModel("cnn-small", 0, "train").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s_.client->EvaluateModel("out", 99, "train").status().code(),
            absl::StatusCode::kNotFound);

  // A job's test set with classes the model will not have is refused at once.
  auto r = Request("cnn-small", "train", "out2", v1::STRATEGY_SCRATCH, 1);
  r.set_test_dataset("other");
  absl::StatusOr<v1::Job> refused = TryStart(r);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(), HasSubstr("test_dataset \"other\""));
}

}  // namespace
}  // namespace kaizen
