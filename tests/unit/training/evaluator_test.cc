#include "server/training/evaluator.h"

#include <torch/torch.h>

#include <atomic>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kaizen::training {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(MapClassesTest, IdenticalReorderedAndUnknownClasses) {
  auto same = MapClasses({"a", "b"}, {"a", "b"}, 2);
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_THAT(same->model_index, ElementsAre(0, 1));
  EXPECT_EQ(same->description, "identical");

  // By name, in another order, and a model class the dataset lacks.
  auto subset = MapClasses({"c", "a"}, {"a", "b", "c"}, 3);
  ASSERT_TRUE(subset.ok()) << subset.status();
  EXPECT_THAT(subset->model_index, ElementsAre(2, 0));
  EXPECT_EQ(subset->description,
            "matched by name; the dataset has no examples of the model's "
            "class b");

  auto unknown = MapClasses({"a", "zebra", "yak"}, {"a", "b"}, 2);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.status().message(), HasSubstr("\"zebra\", \"yak\" are not among"));
  EXPECT_THAT(unknown.status().message(), HasSubstr("(a, b)"));
}

TEST(MapClassesTest, RefusesModelNamesThatCannotNameItsOutputs) {
  auto count = MapClasses({"a"}, {"a", "b"}, 3);
  EXPECT_EQ(count.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(count.status().message(), HasSubstr("names 2 classes but has 3 outputs"));
  auto twice = MapClasses({"a"}, {"a", "b", "a"}, 3);
  EXPECT_EQ(twice.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(twice.status().message(), HasSubstr("class \"a\" twice"));
}

TEST(MapClassesTest, AnErrorListsAtMostTwentyNames) {
  std::vector<std::string> model;
  for (int i = 0; i < 500; ++i) model.push_back(absl::StrCat("class-", i));
  auto unknown = MapClasses({"zebra"}, model, 500);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.status().message(), HasSubstr("class-19 and 480 more)"));
  EXPECT_LT(unknown.status().message().size(), 400u);
}

TEST(MapClassesTest, AModelWithoutNamesMatchesByIndexOnlyWithTheSameCount) {
  auto by_index = MapClasses({"x", "y", "z"}, {}, 3);
  ASSERT_TRUE(by_index.ok()) << by_index.status();
  EXPECT_THAT(by_index->model_index, ElementsAre(0, 1, 2));
  EXPECT_THAT(by_index->description, HasSubstr("by index"));
  auto mismatch = MapClasses({"x", "y"}, {}, 3);
  EXPECT_EQ(mismatch.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(mismatch.status().message(), HasSubstr("3 outputs"));
}

TEST(EvaluationAccumulatorTest, CountsConfusionPrecisionRecallTopKAndLoss) {
  // Dataset classes {dog, cat}; the model knows {cat, dog, bird}.
  auto mapping = MapClasses({"dog", "cat"}, {"cat", "dog", "bird"}, 3);
  ASSERT_TRUE(mapping.ok());
  EvaluationAccumulator acc({"dog", "cat"}, {"cat", "dog", "bird"}, *mapping, /*top_k=*/2);
  // Rows: logits over (cat, dog, bird).
  const torch::Tensor logits = torch::tensor({{0.f, 2.f, 1.f},    // dog -> dog
                                              {0.f, 1.f, 2.f},    // dog -> bird (dog 2nd)
                                              {3.f, 0.f, 1.f},    // dog -> cat (dog 3rd)
                                              {2.f, 1.f, 0.f}});  // cat -> cat
  const torch::Tensor labels = torch::tensor({0, 0, 0, 1}, torch::kLong);
  ASSERT_TRUE(acc.Add(logits.narrow(0, 0, 2), labels.narrow(0, 0, 2)).ok());
  ASSERT_TRUE(acc.Add(logits.narrow(0, 2, 2), labels.narrow(0, 2, 2)).ok());
  const kaizen::v1::Evaluation e = acc.Finish();
  EXPECT_EQ(e.examples(), 4);
  EXPECT_DOUBLE_EQ(e.accuracy(), 0.5);
  EXPECT_EQ(e.top_k(), 2);
  EXPECT_DOUBLE_EQ(e.top_k_accuracy(), 0.75);
  EXPECT_THAT(e.confusion(), ElementsAre(1, 1, 1,    // dog: as cat, dog, bird
                                         1, 0, 0));  // cat
  EXPECT_THAT(e.predicted_classes(), ElementsAre("cat", "dog", "bird"));
  ASSERT_EQ(e.classes_size(), 2);
  EXPECT_EQ(e.classes(0).name(), "dog");
  EXPECT_EQ(e.classes(0).support(), 3);
  EXPECT_DOUBLE_EQ(e.classes(0).precision(), 1.0);  // the one "dog" answer was right
  EXPECT_DOUBLE_EQ(e.classes(0).recall(), 1.0 / 3);
  EXPECT_DOUBLE_EQ(e.classes(0).f1(), 0.5);
  EXPECT_DOUBLE_EQ(e.classes(1).precision(), 0.5);  // two "cat" answers, one right
  EXPECT_DOUBLE_EQ(e.classes(1).recall(), 1.0);
  // Mean cross-entropy, by hand.
  const auto ce = [](std::vector<double> z, int target) {
    double sum = 0;
    for (double v : z) sum += std::exp(v);
    return std::log(sum) - z[target];
  };
  const double expected =
      (ce({0, 2, 1}, 1) + ce({0, 1, 2}, 1) + ce({3, 0, 1}, 1) + ce({2, 1, 0}, 0)) / 4;
  EXPECT_NEAR(e.mean_loss(), expected, 1e-5);
}

TEST(EvaluationAccumulatorTest, LeavesOutAConfusionMatrixOverTheCellLimit) {
  std::vector<std::string> names;
  for (int i = 0; i < 1001; ++i) names.push_back(absl::StrCat(i));
  std::vector<std::string> model(names.begin(), names.end() - 1);
  model.push_back("extra");  // 1001 x 1001 cells: over the limit
  model.push_back("more");
  std::vector<std::string> dataset(names.begin(), names.end() - 1);
  auto mapping = MapClasses(dataset, model, static_cast<int64_t>(model.size()));
  ASSERT_TRUE(mapping.ok()) << mapping.status();
  EvaluationAccumulator acc(dataset, model, *mapping, 1);
  ASSERT_TRUE(acc.Add(torch::zeros({1, 1002}), torch::tensor({0}, torch::kLong)).ok());
  const kaizen::v1::Evaluation e = acc.Finish();
  EXPECT_EQ(e.confusion_size(), 0);
  EXPECT_EQ(e.predicted_classes_size(), 0);
  EXPECT_EQ(e.classes_size(), 1000) << "per-class figures stay";
  EXPECT_EQ(e.examples(), 1);
}

TEST(EvaluationAccumulatorTest, RefusesLogitsOfTheWrongShapeAndLabelsOutOfRange) {
  auto mapping = MapClasses({"a", "b"}, {"a", "b"}, 2);
  ASSERT_TRUE(mapping.ok());
  EvaluationAccumulator acc({"a", "b"}, {"a", "b"}, *mapping, 5);
  EXPECT_EQ(acc.Finish().top_k(), 2) << "top-k is capped at the class count";
  EXPECT_EQ(acc.Add(torch::zeros({2, 3}), torch::tensor({0, 1}, torch::kLong)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(acc.Add(torch::zeros({2, 2}), torch::tensor({0, 2}, torch::kLong)).code(),
            absl::StatusCode::kInvalidArgument);
}

// A classifier of brightness: logit 0 ("bright") is the image's mean, logit
// 1 ("dark") is one minus it.
torch::jit::Module BrightnessModel() {
  torch::jit::Module m("Brightness");
  m.define(R"(
def forward(self, x):
    b = x.mean(dim=[1, 2, 3])
    return torch.stack([b, 1.0 - b], dim=1)
)");
  return m;
}

kaizen::v1::Model BrightnessMetadata() {
  kaizen::v1::Model meta;
  meta.set_name("brightness");
  meta.set_version(3);
  for (int64_t d : {1, 4, 4}) meta.add_input_shape(d);
  meta.add_class_names("bright");
  meta.add_class_names("dark");
  meta.mutable_head()->set_out_features(2);
  return meta;
}

// Flat images of `levels`, labelled by `labels` (dataset classes dark, bright).
datasets::DecodedDataset FlatImages(const std::vector<uint8_t>& levels,
                                    const std::vector<int32_t>& labels) {
  datasets::DecodedDataset d;
  d.class_names = {"dark", "bright"};
  for (size_t i = 0; i < levels.size(); ++i) {
    // 8x8 images, converted to the model's 4x4.
    d.records.push_back({labels[i], 8, 8, 1, static_cast<int64_t>(d.pixels.size())});
    d.pixels.insert(d.pixels.end(), 64, levels[i]);
  }
  return d;
}

TEST(EvaluateClassifierTest, RunsTheModelOverEveryImageInTheModelsInput) {
  // Five images; the one at 200 labelled dark is an error of the model's.
  const datasets::DecodedDataset data = FlatImages({10, 20, 200, 230, 250}, {0, 0, 0, 1, 1});
  EvaluateOptions o;
  o.batch_size = 2;
  o.top_k = 1;
  auto e = EvaluateClassifier(BrightnessModel(), BrightnessMetadata(), data, o);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->model(), "brightness");
  EXPECT_EQ(e->version(), 3);
  EXPECT_EQ(e->examples(), 5);
  EXPECT_DOUBLE_EQ(e->accuracy(), 0.8);
  EXPECT_EQ(e->class_mapping(), "matched by name");
  // Rows dark, bright; columns the model's bright, dark.
  EXPECT_THAT(e->confusion(), ElementsAre(1, 2, 2, 0));
  EXPECT_GT(e->examples_per_second(), 0);
}

TEST(EvaluateClassifierTest, StopsWhenAskedAndRefusesWhatItCannotRun) {
  const datasets::DecodedDataset data = FlatImages({10, 20, 200, 230}, {0, 0, 1, 1});
  EvaluateOptions o;
  o.batch_size = 1;
  std::atomic<int> asked{0};
  o.should_stop = [&] { return ++asked > 2; };
  auto stopped = EvaluateClassifier(BrightnessModel(), BrightnessMetadata(), data, o);
  EXPECT_EQ(stopped.status().code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(stopped.status().message(), HasSubstr("after 2 of 4"));

  kaizen::v1::Model other = BrightnessMetadata();
  other.set_class_names(1, "cat");
  EXPECT_EQ(EvaluateClassifier(BrightnessModel(), other, data, {}).status().code(),
            absl::StatusCode::kInvalidArgument);

  torch::jit::Module three("Three");
  three.define(R"(
def forward(self, x):
    return torch.zeros([x.size(0), 3])
)");
  auto wrong = EvaluateClassifier(three, BrightnessMetadata(), data, {});
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(wrong.status().message(), HasSubstr("logits of shape"));

  EXPECT_EQ(EvaluateClassifier(BrightnessModel(), BrightnessMetadata(),
                               datasets::DecodedDataset{{"dark", "bright"}, {}, {}}, {})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kaizen::training
