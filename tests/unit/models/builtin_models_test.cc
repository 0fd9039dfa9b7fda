#include "server/models/builtin_models.h"

#include <torch/script.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/models/model_file.h"
#include "server/models/torchscript_inspector.h"
#include "tests/test_util/python.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::models {
namespace {

torch::jit::Module Create(const std::string& name, const BuiltinOptions& options) {
  absl::StatusOr<torch::jit::Module> module = CreateBuiltinModel(name, options);
  EXPECT_TRUE(module.ok()) << module.status();
  return *module;
}

BuiltinOptions Opts(int64_t channels, int64_t size, int64_t classes = 10, uint64_t seed = 0) {
  BuiltinOptions options;
  options.in_channels = channels;
  options.input_size = size;
  options.num_classes = classes;
  options.seed = seed;
  return options;
}

at::Tensor Forward(torch::jit::Module& module, const at::Tensor& x) {
  at::NoGradGuard no_grad;
  return module.forward({x}).toTensor();
}

TEST(BuiltinModelsTest, NamesAreKnown) {
  EXPECT_EQ(BuiltinModelNames(), (std::vector<std::string>{"resnet-small", "cnn-small"}));
  EXPECT_TRUE(IsBuiltinModel("resnet-small"));
  EXPECT_TRUE(IsBuiltinModel("cnn-small"));
  EXPECT_FALSE(IsBuiltinModel("resnet18"));
}

TEST(BuiltinModelsTest, BuiltinResNetRunsAt28And224) {
  for (const std::string& name : BuiltinModelNames()) {
    SCOPED_TRACE(name);
    torch::jit::Module gray = Create(name, Opts(1, 28, 10, 0));
    gray.eval();
    EXPECT_EQ(Forward(gray, at::randn({2, 1, 28, 28})).sizes(), (std::vector<int64_t>{2, 10}));

    torch::jit::Module rgb = Create(name, Opts(3, 224, 7, 0));
    rgb.eval();
    at::Tensor x = at::randn({3, 3, 224, 224});
    EXPECT_EQ(Forward(rgb, x).sizes(), (std::vector<int64_t>{3, 7}));
    at::NoGradGuard no_grad;
    at::Tensor features = rgb.get_method("forward_features")({x}).toTensor();
    EXPECT_EQ(features.sizes(), (std::vector<int64_t>{3, 128}));
  }
}

TEST(BuiltinModelsTest, DescribeMatchesTheBuiltModule) {
  for (const std::string& name : BuiltinModelNames()) {
    SCOPED_TRACE(name);
    BuiltinOptions options = Opts(3, 32, 5, 0);
    absl::StatusOr<kaizen::v1::Model> model = DescribeBuiltinModel(name, options);
    ASSERT_TRUE(model.ok()) << model.status();
    EXPECT_EQ(model->source(), kaizen::v1::MODEL_SOURCE_BUILTIN);
    EXPECT_EQ(model->version(), 1);
    EXPECT_EQ(model->architecture(), name);
    EXPECT_EQ(std::vector<int64_t>(model->input_shape().begin(), model->input_shape().end()),
              (std::vector<int64_t>{3, 32, 32}));
    EXPECT_EQ(model->normalization().mean_size(), 3);
    EXPECT_EQ(model->normalization().std(2), 0.5f);
    EXPECT_EQ(model->head().module_path(), "fc");
    EXPECT_EQ(model->head().kind(), kaizen::v1::HEAD_KIND_LINEAR);
    EXPECT_EQ(model->head().in_features(), 128);
    EXPECT_EQ(model->head().out_features(), 5);
    EXPECT_FALSE(model->description().empty());

    torch::jit::Module module = Create(name, options);
    int64_t count = 0;
    for (const at::Tensor& p : module.parameters()) count += p.numel();
    EXPECT_EQ(model->parameter_count(), count);
  }
  // Sizes reported in the lead's notes: resnet-small is the bigger one.
  absl::StatusOr<kaizen::v1::Model> resnet = DescribeBuiltinModel("resnet-small");
  absl::StatusOr<kaizen::v1::Model> cnn = DescribeBuiltinModel("cnn-small");
  ASSERT_TRUE(resnet.ok() && cnn.ok());
  std::printf("parameter_count resnet-small=%lld cnn-small=%lld (1x28x28, 10 classes)\n",
              static_cast<long long>(resnet->parameter_count()),
              static_cast<long long>(cnn->parameter_count()));
  EXPECT_GT(resnet->parameter_count(), 5 * cnn->parameter_count());
  EXPECT_LT(resnet->parameter_count(), 10 * cnn->parameter_count());
}

TEST(BuiltinModelsTest, RejectsUnknownNameAndBadOptions) {
  EXPECT_EQ(CreateBuiltinModel("vgg", {}).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(DescribeBuiltinModel("vgg").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(CreateBuiltinModel("cnn-small", Opts(0, 28, 10, 0)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateBuiltinModel("cnn-small", Opts(1, 4, 10, 0)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DescribeBuiltinModel("resnet-small", Opts(1, 28, 0, 0)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(BuiltinModelsTest, BuiltinParametersRequireGrad) {
  torch::jit::Module module = Create("resnet-small", Opts(3, 32, 10, 0));
  std::set<std::string> names;
  for (const auto& p : module.named_parameters()) {
    EXPECT_TRUE(p.value.requires_grad()) << p.name;
    names.insert(p.name);
  }
  for (const char* expected :
       {"stem.conv1.weight", "stem.bn1.weight", "layer1.0.conv1.weight", "layer1.1.bn2.bias",
        "layer2.0.downsample.0.weight", "layer3.1.conv2.weight", "fc.weight", "fc.bias"}) {
    EXPECT_EQ(names.count(expected), 1u) << expected;
  }
  // BatchNorm statistics are buffers, not parameters.
  EXPECT_EQ(names.count("stem.bn1.running_mean"), 0u);
  std::set<std::string> buffers;
  for (const auto& b : module.named_buffers()) buffers.insert(b.name);
  EXPECT_EQ(buffers.count("stem.bn1.running_mean"), 1u);
  EXPECT_EQ(buffers.count("stem.bn1.num_batches_tracked"), 1u);

  // Gradients reach the lowest layer.
  at::Tensor loss = module.forward({at::randn({2, 3, 32, 32})}).toTensor().sum();
  loss.backward();
  at::Tensor grad =
      module.attr("stem").toModule().attr("conv1").toModule().attr("weight").toTensor().grad();
  ASSERT_TRUE(grad.defined());
  EXPECT_GT(grad.abs().sum().item<double>(), 0.0);
}

TEST(BuiltinModelsTest, BuiltinTrainEvalRecurses) {
  for (const std::string& name : BuiltinModelNames()) {
    SCOPED_TRACE(name);
    torch::jit::Module module = Create(name, Opts(1, 28, 10, 0));
    at::Tensor a = at::randn({4, 1, 28, 28});
    at::Tensor b = at::cat({a.slice(0, 0, 1), at::randn({3, 1, 28, 28}) * 3 + 1});

    // Training: batch statistics, so a sample's logits depend on its batch,
    // and the running statistics move.
    EXPECT_TRUE(module.is_training());
    at::Tensor train_a = Forward(module, a)[0];
    at::Tensor train_b = Forward(module, b)[0];
    EXPECT_FALSE(at::allclose(train_a, train_b, 1e-4, 1e-5));
    for (const auto& m : module.named_modules()) {
      if (m.value.hasattr("num_batches_tracked")) {
        EXPECT_EQ(m.value.attr("num_batches_tracked").toTensor().item<int64_t>(), 2) << m.name;
        EXPECT_FALSE(m.value.attr("running_mean").toTensor().eq(0).all().item<bool>()) << m.name;
      }
    }

    module.eval();
    for (const auto& m : module.named_modules()) {
      EXPECT_FALSE(m.value.is_training()) << m.name;
    }
    at::Tensor eval_a = Forward(module, a)[0];
    at::Tensor eval_b = Forward(module, b)[0];
    EXPECT_TRUE(at::allclose(eval_a, eval_b, 1e-5, 1e-6));

    module.train();
    for (const auto& m : module.named_modules()) {
      EXPECT_TRUE(m.value.is_training()) << m.name;
    }
  }
}

TEST(BuiltinModelsTest, BuiltinIsDeterministicForSeed) {
  for (const std::string& name : BuiltinModelNames()) {
    SCOPED_TRACE(name);
    at::manual_seed(123);
    at::Tensor before = at::randn({4});
    at::manual_seed(123);
    torch::jit::Module one = Create(name, Opts(1, 28, 10, 7));
    // The global generator is left alone.
    EXPECT_TRUE(at::equal(at::randn({4}), before));

    torch::jit::Module two = Create(name, Opts(1, 28, 10, 7));
    torch::jit::Module other = Create(name, Opts(1, 28, 10, 8));
    auto p1 = one.named_parameters();
    auto p2 = two.named_parameters();
    auto p3 = other.named_parameters();
    std::vector<at::Tensor> t1, t2, t3;
    for (const auto& p : p1) t1.push_back(p.value);
    for (const auto& p : p2) t2.push_back(p.value);
    for (const auto& p : p3) t3.push_back(p.value);
    ASSERT_EQ(t1.size(), t2.size());
    bool any_differs = false;
    for (size_t i = 0; i < t1.size(); ++i) {
      EXPECT_TRUE(at::equal(t1[i], t2[i])) << i;
      if (!at::equal(t1[i], t3[i])) any_differs = true;
    }
    EXPECT_TRUE(any_differs);
  }
}

void WriteFloats(const std::string& path, const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(c.data_ptr<float>()), c.numel() * sizeof(float));
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

constexpr char kPythonForward[] = R"(
import struct, sys
import torch
path, input_path, shape, output_path, meta_path = sys.argv[1:6]
files = {"kaizen.json": ""}
model = torch.jit.load(path, _extra_files=files)
model.eval()
with open(input_path, "rb") as f:
    x = torch.frombuffer(bytearray(f.read()), dtype=torch.float32)
x = x.reshape([int(d) for d in shape.split(",")])
with torch.no_grad():
    y = model(x).flatten().tolist()
with open(output_path, "wb") as f:
    f.write(struct.pack("%df" % len(y), *y))
with open(meta_path, "wb") as f:
    f.write(files["kaizen.json"] if isinstance(files["kaizen.json"], bytes)
            else files["kaizen.json"].encode())
)";

TEST(BuiltinModelsTest, BuiltinSavedFileLoadsInPythonWithSameLogits) {
  if (!test_util::PythonHasTorch()) GTEST_SKIP() << KAIZEN_PYTHON << " cannot import torch";
  test_util::TempDir dir;
  for (const std::string& name : BuiltinModelNames()) {
    SCOPED_TRACE(name);
    BuiltinOptions options = Opts(3, 32, 6, 3);
    torch::jit::Module module = Create(name, options);
    // A few training steps' worth of BN statistics so eval mode is not trivial.
    Forward(module, at::randn({8, 3, 32, 32}));
    module.eval();
    absl::StatusOr<kaizen::v1::Model> meta = DescribeBuiltinModel(name, options);
    ASSERT_TRUE(meta.ok());
    meta->set_name("py-" + name);
    const std::string model_path = dir.File(name + ".pt");
    ASSERT_TRUE(SaveModelFile(module, *meta, model_path).ok());

    at::Tensor x = at::randn({2, 3, 32, 32});
    at::Tensor expected = Forward(module, x);
    WriteFloats(dir.File("input.bin"), x);
    const absl::StatusOr<std::string> ran = test_util::RunPythonSource(
        kPythonForward, dir.File("forward.py"),
        {model_path, dir.File("input.bin"), "2,3,32,32", dir.File("output.bin"),
         dir.File("meta.json")});
    ASSERT_TRUE(ran.ok()) << ran.status();

    std::string bytes = ReadAll(dir.File("output.bin"));
    ASSERT_EQ(bytes.size(), expected.numel() * sizeof(float));
    at::Tensor actual = at::from_blob(bytes.data(), expected.sizes(), at::kFloat).clone();
    EXPECT_TRUE(at::allclose(actual, expected, 1e-5, 1e-5))
        << "max diff " << (actual - expected).abs().max().item<float>();
    EXPECT_NE(ReadAll(dir.File("meta.json")).find("py-" + name), std::string::npos);
  }
}

TEST(BuiltinModelsTest, HeadCanBeReplacedByReRegisteringWeights) {
  test_util::TempDir dir;
  torch::jit::Module module = Create("resnet-small", Opts(1, 28, 10, 0));
  module.eval();
  torch::jit::Module fc = module.attr("fc").toModule();
  const int64_t in_features = fc.attr("weight").toTensor().size(1);
  fc.register_parameter("weight", at::randn({4, in_features}).set_requires_grad(true), false);
  fc.register_parameter("bias", at::zeros({4}).set_requires_grad(true), false);

  at::Tensor x = at::randn({3, 1, 28, 28});
  at::Tensor logits = Forward(module, x);
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{3, 4}));
  bool found = false;
  for (const auto& p : module.named_parameters()) {
    if (p.name == "fc.weight") {
      found = true;
      EXPECT_EQ(p.value.sizes(), (std::vector<int64_t>{4, in_features}));
      EXPECT_TRUE(p.value.requires_grad());
    }
  }
  EXPECT_TRUE(found);

  kaizen::v1::Model meta;
  meta.set_architecture("resnet-small");
  const std::string path = dir.File("four.pt");
  ASSERT_TRUE(SaveModelFile(module, meta, path).ok());
  torch::jit::Module loaded = torch::jit::load(path);
  loaded.eval();
  EXPECT_TRUE(at::allclose(Forward(loaded, x), logits, 1e-5, 1e-6));

  absl::StatusOr<kaizen::v1::Model> inspected = InspectTorchScriptFile(path, {});
  ASSERT_TRUE(inspected.ok()) << inspected.status();
  EXPECT_EQ(inspected->head().module_path(), "fc");
  EXPECT_EQ(inspected->head().out_features(), 4);
}

}  // namespace
}  // namespace kaizen::models
