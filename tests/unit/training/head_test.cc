#include "server/training/head.h"

#include <cstdlib>
#include <string>

#include "gtest/gtest.h"
#include "server/models/model_file.h"
#include "tests/test_util/python.h"
#include "tests/test_util/temp_dir.h"
#include "tests/unit/training/training_test_util.h"

namespace kaizen::training {
namespace {

using fixtures::Builtin;

torch::Tensor Forward(torch::jit::Module m, const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  return m.forward({x}).toTensor();
}

// Loads `path` with Python's torch.jit.load and prints the output shape for zeros.
std::string PythonOutputShape(const std::string& path) {
  absl::StatusOr<std::string> out =
      test_util::RunPython({"-c",
                            "import sys, torch; m = torch.jit.load(sys.argv[1]); m.eval(); "
                            "print(list(m(torch.zeros(2, 1, 28, 28)).shape))",
                            path});
  if (!out.ok()) return out.status().ToString();
  std::string s = *std::move(out);
  while (!s.empty() && (s.back() == '\n')) s.pop_back();
  return s;
}

TEST(HeadTest, ReplacesHeadForNewClassCount) {
  fixtures::BaseModel base = Builtin("resnet-small", /*classes=*/10);
  HeadSpec spec;
  spec.num_classes = 3;
  auto split = SplitClassifier(base.module, base.metadata, spec, /*keep_head=*/false);
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_EQ(split->in_features, 128);
  EXPECT_EQ(split->identity_path, "fc");
  const torch::Tensor x = torch::rand({2, 1, 28, 28});
  base.module.eval();
  split->backbone.eval();
  // The backbone's head is an identity: backbone(x) are the features.
  EXPECT_TRUE(torch::allclose(Forward(split->backbone, x),
                              base.module.run_method("forward_features", x).toTensor(), 1e-5,
                              1e-5));
  // The base is untouched.
  EXPECT_EQ(base.module.attr("fc").toModule().attr("weight").toTensor().size(0), 10);

  auto classifier = AssembleClassifier(*split, torch::kCPU);
  ASSERT_TRUE(classifier.ok()) << classifier.status();
  EXPECT_EQ(AssembledHeadPath(*split), "fc");
  const torch::Tensor logits = Forward(*classifier, x);
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(classifier->attr("fc").toModule().attr("weight").toTensor().sizes(),
            (std::vector<int64_t>{3, 128}));
  EXPECT_TRUE(
      torch::allclose(logits, Forward(split->head, Forward(split->backbone, x)), 1e-5, 1e-5));

  // Survives save/load, in C++ and in Python.
  kaizen::test_util::TempDir dir;
  const std::string path = dir.File("model.pt");
  kaizen::v1::Model meta = base.metadata;
  meta.mutable_head()->set_out_features(3);
  ASSERT_TRUE(models::SaveModelFile(*classifier, meta, path).ok());
  torch::jit::Module loaded = torch::jit::load(path);
  loaded.eval();
  EXPECT_TRUE(torch::allclose(Forward(loaded, x), logits, 1e-6, 1e-6));
  EXPECT_EQ(PythonOutputShape(path), "[2, 3]");

  // Resuming keeps the trained head.
  auto again = SplitClassifier(loaded, meta, spec, /*keep_head=*/true);
  ASSERT_TRUE(again.ok()) << again.status();
  again->backbone.eval();
  EXPECT_TRUE(
      torch::allclose(Forward(again->head, Forward(again->backbone, x)), logits, 1e-5, 1e-5));
}

TEST(HeadTest, MlpHeadWrapsBackbone) {
  fixtures::BaseModel base = Builtin("cnn-small", /*classes=*/10);
  HeadSpec spec;
  spec.kind = kaizen::v1::HEAD_KIND_MLP;
  spec.num_classes = 4;
  spec.hidden_units = 32;
  spec.dropout = 0.3;
  auto split = SplitClassifier(base.module, base.metadata, spec, false);
  ASSERT_TRUE(split.ok()) << split.status();
  auto classifier = AssembleClassifier(*split, torch::kCPU);
  ASSERT_TRUE(classifier.ok()) << classifier.status();
  EXPECT_EQ(AssembledHeadPath(*split), "head");
  EXPECT_TRUE(classifier->hasattr("backbone"));
  EXPECT_EQ(
      classifier->attr("head").toModule().attr("fc1").toModule().attr("weight").toTensor().sizes(),
      (std::vector<int64_t>{32, 128}));
  const torch::Tensor x = torch::rand({2, 1, 28, 28});
  const torch::Tensor logits = Forward(*classifier, x);
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 4}));
  EXPECT_TRUE(torch::equal(logits, Forward(*classifier, x)));  // eval: no dropout

  kaizen::test_util::TempDir dir;
  const std::string path = dir.File("mlp.pt");
  kaizen::v1::Model meta = base.metadata;
  meta.mutable_head()->set_module_path("head");
  meta.mutable_head()->set_kind(kaizen::v1::HEAD_KIND_MLP);
  ASSERT_TRUE(models::SaveModelFile(*classifier, meta, path).ok());
  torch::jit::Module loaded = torch::jit::load(path);
  loaded.eval();
  EXPECT_TRUE(torch::allclose(Forward(loaded, x), logits, 1e-6, 1e-6));
  EXPECT_EQ(PythonOutputShape(path), "[2, 4]");

  // A wrapped model splits back into the same backbone and head.
  auto again = SplitClassifier(loaded, meta, spec, /*keep_head=*/true);
  ASSERT_TRUE(again.ok()) << again.status();
  again->backbone.eval();
  again->head.eval();
  EXPECT_TRUE(
      torch::allclose(Forward(again->head, Forward(again->backbone, x)), logits, 1e-5, 1e-5));
  // ... and can get a plain linear head again.
  HeadSpec linear;
  linear.num_classes = 2;
  auto relinear = SplitClassifier(loaded, meta, linear, false);
  ASSERT_TRUE(relinear.ok()) << relinear.status();
  auto plain = AssembleClassifier(*relinear, torch::kCPU);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(Forward(*plain, x).sizes(), (std::vector<int64_t>{2, 2}));
}

// A head trained behind a standardisation of its input, folded into the
// exported classifier, gives the same logits on raw input, for a Linear and
// an MLP head; a wrong-sized standardisation is refused.
TEST(HeadTest, FoldsInputStandardizationIntoTheHead) {
  fixtures::BaseModel base = Builtin("cnn-small", /*classes=*/10);
  for (auto kind : {kaizen::v1::HEAD_KIND_LINEAR, kaizen::v1::HEAD_KIND_MLP}) {
    HeadSpec spec;
    spec.kind = kind;
    spec.num_classes = 3;
    spec.hidden_units = 16;
    auto split = SplitClassifier(base.module, base.metadata, spec, /*keep_head=*/false);
    ASSERT_TRUE(split.ok()) << split.status();
    split->backbone.eval();
    split->head.eval();
    torch::manual_seed(11);
    const torch::Tensor mean = torch::randn({128}) * 50;
    const torch::Tensor std = torch::rand({128}) * 1000 + 0.5;
    const torch::Tensor x = torch::rand({4, 1, 28, 28});
    const torch::Tensor expected = Forward(split->head, (Forward(split->backbone, x) - mean) / std);

    auto classifier = AssembleClassifier(*split, torch::kCPU);
    ASSERT_TRUE(classifier.ok()) << classifier.status();
    const torch::Tensor unfolded = Forward(*classifier, x);
    ASSERT_TRUE(FoldInputStandardization(*split, mean, std, &*classifier).ok());
    const torch::Tensor folded = Forward(*classifier, x);
    EXPECT_TRUE(torch::allclose(folded, expected, 1e-4, 1e-4))
        << kaizen::v1::HeadKind_Name(kind) << ": "
        << (folded - expected).abs().max().item<double>();
    EXPECT_FALSE(torch::allclose(unfolded, expected, 1e-2, 1e-2)) << "the fold changed nothing";

    auto bad = FoldInputStandardization(*split, mean.narrow(0, 0, 10), std, &*classifier);
    EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(FoldInputStandardization(*split, mean, torch::zeros({128}), &*classifier).code(),
              absl::StatusCode::kInvalidArgument);
  }
}

// INCREMENTAL: a trained classifier's head grows; the old rows and biases
// are copied bit for bit and the new ones are a fresh head's.
TEST(HeadTest, GrowHeadKeepsOldRowsBitForBit) {
  for (const kaizen::v1::HeadKind kind :
       {kaizen::v1::HEAD_KIND_LINEAR, kaizen::v1::HEAD_KIND_MLP}) {
    SCOPED_TRACE(kaizen::v1::HeadKind_Name(kind));
    // A 5-class classifier as a job writes it.
    fixtures::BaseModel base = Builtin("cnn-small", /*classes=*/10);
    HeadSpec spec;
    spec.kind = kind;
    spec.num_classes = 5;
    spec.seed = 11;
    auto trained = SplitClassifier(base.module, base.metadata, spec, /*keep_head=*/false);
    ASSERT_TRUE(trained.ok()) << trained.status();
    auto classifier = AssembleClassifier(*trained, torch::kCPU);
    ASSERT_TRUE(classifier.ok()) << classifier.status();
    kaizen::v1::Model meta = base.metadata;
    meta.mutable_head()->set_module_path(AssembledHeadPath(*trained));
    meta.mutable_head()->set_kind(kind);

    auto split = SplitClassifier(*classifier, meta, spec, /*keep_head=*/true);
    ASSERT_TRUE(split.ok()) << split.status();
    const std::string last = kind == kaizen::v1::HEAD_KIND_MLP ? "fc2" : "";
    auto old_linear = FindSubmodule(split->head, last);
    ASSERT_TRUE(old_linear.ok());
    const torch::Tensor old_w = old_linear->attr("weight").toTensor().clone();
    const torch::Tensor old_b = old_linear->attr("bias").toTensor().clone();
    torch::Tensor fc1_w;
    if (kind == kaizen::v1::HEAD_KIND_MLP) {
      fc1_w = split->head.attr("fc1").toModule().attr("weight").toTensor().clone();
    }

    HeadSpec grow = spec;
    grow.seed = 12;
    ASSERT_TRUE(GrowHead(grow, 8, &*split).ok());
    EXPECT_EQ(split->num_classes, 8);
    auto grown = FindSubmodule(split->head, last);
    ASSERT_TRUE(grown.ok());
    const torch::Tensor w = grown->attr("weight").toTensor();
    const torch::Tensor b = grown->attr("bias").toTensor();
    ASSERT_EQ(w.sizes(), (std::vector<int64_t>{8, old_w.size(1)}));
    EXPECT_TRUE(torch::equal(w.narrow(0, 0, 5), old_w));
    EXPECT_TRUE(torch::equal(b.narrow(0, 0, 5), old_b));
    EXPECT_TRUE(w.requires_grad());
    if (fc1_w.defined()) {
      EXPECT_TRUE(
          torch::equal(split->head.attr("fc1").toModule().attr("weight").toTensor(), fc1_w));
    }
    // The new rows are those of a fresh head with the same seed.
    HeadSpec fresh_spec = grow;
    fresh_spec.kind = kaizen::v1::HEAD_KIND_LINEAR;
    fresh_spec.num_classes = 8;
    auto fresh = NewHead(fresh_spec, old_w.size(1));
    ASSERT_TRUE(fresh.ok());
    EXPECT_TRUE(torch::equal(w.narrow(0, 5, 3), fresh->attr("weight").toTensor().narrow(0, 5, 3)));
    // The grown model still gives the old logits on the old classes.
    auto assembled = AssembleClassifier(*split, torch::kCPU);
    ASSERT_TRUE(assembled.ok()) << assembled.status();
    const torch::Tensor x = torch::rand({3, 1, 28, 28});
    classifier->eval();
    EXPECT_TRUE(torch::allclose(Forward(*assembled, x).narrow(1, 0, 5), Forward(*classifier, x),
                                1e-6, 1e-6));
    EXPECT_FALSE(GrowHead(grow, 4, &*split).ok());
  }
}

}  // namespace
}  // namespace kaizen::training
