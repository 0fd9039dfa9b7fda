#include "server/models/torchscript_inspector.h"

#include <torch/script.h>

#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/common/sha256.h"
#include "server/models/builtin_models.h"
#include "server/models/model_file.h"
#include "server/models/model_metadata.h"
#include "server/models/text_encoder.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::models {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

const std::string kResNet18 = KAIZEN_FIXTURE_DIR "/resnet18.pt";

std::vector<int64_t> Shape(const kaizen::v1::Model& model) {
  return {model.input_shape().begin(), model.input_shape().end()};
}

torch::jit::Module NewModule(const std::string& class_name) {
  torch::jit::Module m(c10::QualifiedName("__torch__.test." + class_name),
                       std::make_shared<torch::jit::CompilationUnit>());
  m.register_attribute("training", c10::BoolType::get(), true);
  return m;
}

torch::jit::Module Linear(int64_t in, int64_t out) {
  torch::jit::Module m = NewModule("Linear");
  m.register_parameter("weight", at::randn({out, in}), false);
  m.register_parameter("bias", at::zeros({out}), false);
  m.define("def forward(self, x):\n    return torch.linear(x, self.weight, self.bias)\n");
  return m;
}

TEST(TorchScriptInspectorTest, InspectsTorchvisionResnet18) {
  absl::StatusOr<kaizen::v1::Model> model = InspectTorchScriptFile(kResNet18, {});
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->architecture(), "torchvision.models.resnet.ResNet");
  EXPECT_EQ(model->head().module_path(), "fc");
  EXPECT_EQ(model->head().kind(), kaizen::v1::HEAD_KIND_LINEAR);
  EXPECT_EQ(model->head().in_features(), 512);
  EXPECT_EQ(model->head().out_features(), 1000);
  EXPECT_EQ(model->parameter_count(), 11689512);
  EXPECT_EQ(Shape(*model), (std::vector<int64_t>{3, 224, 224}));
  // ImageNet statistics by default for three channels.
  ASSERT_EQ(model->normalization().mean_size(), 3);
  EXPECT_FLOAT_EQ(model->normalization().mean(0), 0.485f);
  EXPECT_FLOAT_EQ(model->normalization().std(2), 0.225f);
  EXPECT_TRUE(model->class_names().empty());
}

TEST(TorchScriptInspectorTest, InspectUsesCallerShapeNormalizationAndNames) {
  InspectOptions options;
  options.input_shape = {3, 64, 64};
  options.mean = {0.5f};
  options.std = {0.25f};
  options.class_names = std::vector<std::string>(1000, "c");
  absl::StatusOr<kaizen::v1::Model> model = InspectTorchScriptFile(kResNet18, options);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(Shape(*model), (std::vector<int64_t>{3, 64, 64}));
  EXPECT_EQ(model->normalization().mean_size(), 3);
  EXPECT_FLOAT_EQ(model->normalization().std(1), 0.25f);
  EXPECT_EQ(model->class_names_size(), 1000);
}

TEST(TorchScriptInspectorTest, InspectHonoursNamedHead) {
  // The real head comes first; a later, unused Linear would be the default.
  test_util::TempDir dir;
  torch::jit::Module m = NewModule("TwoHeads");
  m.register_module("classifier", Linear(3 * 4 * 4, 5));
  m.register_module("aux", Linear(3 * 4 * 4, 2));
  m.define(R"(
def forward(self, x):
    return self.classifier.forward(torch.flatten(x, 1))
)");
  const std::string path = dir.File("two_heads.pt");
  m.save(path);

  InspectOptions options;
  options.input_shape = {3, 4, 4};
  absl::StatusOr<kaizen::v1::Model> by_default = InspectTorchScriptFile(path, options);
  ASSERT_FALSE(by_default.ok());
  EXPECT_THAT(std::string(by_default.status().message()),
              HasSubstr("model output has 5 classes but head 'aux' has 2 outputs"));

  options.head_module = "classifier";
  absl::StatusOr<kaizen::v1::Model> named = InspectTorchScriptFile(path, options);
  ASSERT_TRUE(named.ok()) << named.status();
  EXPECT_EQ(named->head().module_path(), "classifier");
  EXPECT_EQ(named->head().in_features(), 48);
  EXPECT_EQ(named->head().out_features(), 5);
  EXPECT_EQ(named->architecture(), "test.TwoHeads");
}

TEST(TorchScriptInspectorTest, InspectProbesInputSize) {
  // Flattens into a fixed-width Linear, so only 28x28 with one channel runs.
  test_util::TempDir dir;
  torch::jit::Module m = NewModule("TinyMnist");
  m.register_parameter("conv_weight", at::randn({4, 1, 3, 3}), false);
  m.register_module("fc", Linear(4 * 28 * 28, 10));
  m.define(R"(
def forward(self, x):
    x = torch.conv2d(x, self.conv_weight, None, [1, 1], [1, 1])
    return self.fc.forward(torch.flatten(x, 1))
)");
  const std::string path = dir.File("tiny.pt");
  m.save(path);
  absl::StatusOr<kaizen::v1::Model> model = InspectTorchScriptFile(path, {});
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(Shape(*model), (std::vector<int64_t>{1, 28, 28}));
  EXPECT_EQ(model->normalization().mean_size(), 1);
  EXPECT_FLOAT_EQ(model->normalization().mean(0), 0.5f);
}

TEST(TorchScriptInspectorTest, InspectRejectsGarbageFile) {
  test_util::TempDir dir;
  const std::string path = dir.File("garbage.pt");
  std::ofstream(path) << "this is not a zip archive";
  absl::StatusOr<kaizen::v1::Model> model = InspectTorchScriptFile(path, {});
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(model.status().message()),
              StartsWith("not a loadable TorchScript file: "));
  // One line, no C++ backtrace.
  EXPECT_EQ(model.status().message().find('\n'), absl::string_view::npos);

  EXPECT_EQ(InspectTorchScriptFile(dir.File("missing.pt"), {}).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(TorchScriptInspectorTest, InspectRejectsUnknownHead) {
  InspectOptions options;
  options.head_module = "foo.bar";
  absl::StatusOr<kaizen::v1::Model> model = InspectTorchScriptFile(kResNet18, options);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(model.status().message(), "head module 'foo.bar' not found; Linear modules are: fc");

  options.head_module = "layer4";
  model = InspectTorchScriptFile(kResNet18, options);
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(std::string(model.status().message()),
              HasSubstr("head module 'layer4' is a torch.nn.modules.container.Sequential, "
                        "not a Linear layer"));
}

TEST(TorchScriptInspectorTest, InspectRejectsModelWithoutLinear) {
  test_util::TempDir dir;
  torch::jit::Module m = NewModule("NoHead");
  m.register_parameter("conv_weight", at::randn({4, 1, 3, 3}), false);
  m.define(R"(
def forward(self, x):
    return torch.flatten(torch.conv2d(x, self.conv_weight), 1)
)");
  const std::string path = dir.File("nohead.pt");
  m.save(path);
  absl::StatusOr<kaizen::v1::Model> model = InspectTorchScriptFile(path, {});
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().message(),
            "no Linear layer found; name the classification head with head_module");
}

TEST(TorchScriptInspectorTest, InspectRejectsNonClassifierOutput) {
  test_util::TempDir dir;
  torch::jit::Module m = NewModule("Unsqueezed");
  m.register_module("fc", Linear(3, 2));
  m.define(R"(
def forward(self, x):
    return torch.unsqueeze(self.fc.forward(torch.mean(x, [2, 3])), 1)
)");
  const std::string path = dir.File("unsqueezed.pt");
  m.save(path);
  InspectOptions options;
  options.input_shape = {3, 8, 8};
  absl::StatusOr<kaizen::v1::Model> model = InspectTorchScriptFile(path, options);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().message(),
            "model output has shape [1,1,2]; a classifier must return [batch, classes]");
}

TEST(TorchScriptInspectorTest, InspectRejectsClassNameCountMismatch) {
  InspectOptions options;
  options.class_names = {"a", "b", "c", "d", "e"};
  absl::StatusOr<kaizen::v1::Model> model = InspectTorchScriptFile(kResNet18, options);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(model.status().message(), "class_names has 5 entries but the head has 1000 outputs");
}

TEST(TorchScriptInspectorTest, InspectRejectsWrongInputShape) {
  InspectOptions options;
  options.input_shape = {1, 224, 224};
  absl::StatusOr<kaizen::v1::Model> model = InspectTorchScriptFile(kResNet18, options);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(model.status().message()),
              StartsWith("forward on input [1,1,224,224] failed: "));
  EXPECT_EQ(model.status().message().find('\n'), absl::string_view::npos);

  for (std::vector<int64_t> bad : {std::vector<int64_t>{3, 224}, {3, 0, 224}, {-1, 32, 32}}) {
    options.input_shape = bad;
    model = InspectTorchScriptFile(kResNet18, options);
    ASSERT_FALSE(model.ok());
    EXPECT_EQ(model.status().message(), "input_shape must be [C,H,W] with positive values");
  }

  options.input_shape = {3, 224, 224};
  options.mean = {0.1f, 0.2f};
  model = InspectTorchScriptFile(kResNet18, options);
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("3 channels"));
}

TEST(TorchScriptInspectorTest, InspectReadsEmbeddedMetadata) {
  test_util::TempDir dir;
  BuiltinOptions options;
  options.in_channels = 1;
  options.input_size = 28;
  options.num_classes = 3;
  absl::StatusOr<torch::jit::Module> module = CreateBuiltinModel("cnn-small", options);
  ASSERT_TRUE(module.ok());
  absl::StatusOr<kaizen::v1::Model> meta = DescribeBuiltinModel("cnn-small", options);
  ASSERT_TRUE(meta.ok());
  for (const char* name : {"cat", "dog", "bird"}) meta->add_class_names(name);
  const std::string path = dir.File("cnn.pt");
  ASSERT_TRUE(SaveModelFile(*module, *meta, path).ok());

  absl::StatusOr<kaizen::v1::Model> model = InspectTorchScriptFile(path, {});
  ASSERT_TRUE(model.ok()) << model.status();
  // From kaizen.json rather than probed (cnn-small would also run at 224).
  EXPECT_EQ(Shape(*model), (std::vector<int64_t>{1, 28, 28}));
  EXPECT_EQ(model->architecture(), "cnn-small");
  EXPECT_THAT(std::vector<std::string>(model->class_names().begin(), model->class_names().end()),
              ::testing::ElementsAre("cat", "dog", "bird"));
  EXPECT_EQ(model->head().module_path(), "fc");
  EXPECT_EQ(model->head().out_features(), 3);
  EXPECT_EQ(model->parameter_count(), meta->parameter_count());
}

// Text models: kaizen.json's text_input and the tokenizer file it names.
constexpr char kVocab[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\ncat\nsat\n";

kaizen::v1::TextInput WordPieceInput(const std::string& tokenizer, int32_t vocab_size) {
  kaizen::v1::TextInput in;
  in.set_tokenizer(kaizen::v1::TOKENIZER_KIND_WORDPIECE);
  in.set_tokenizer_sha256(common::Sha256Hex(tokenizer));
  in.set_vocab_size(vocab_size);
  in.set_max_length(16);
  in.set_first_id(2);
  in.set_last_id(3);
  in.set_pad_id(0);
  in.set_mask_id(4);
  return in;
}

// Saves `module` with kaizen.json and, when not empty, the tokenizer.
std::string SaveText(const torch::jit::Module& module, const kaizen::v1::Model& meta,
                     const std::string& tokenizer, const std::string& path) {
  absl::StatusOr<std::string> json = ModelToMetadataJson(meta);
  EXPECT_TRUE(json.ok());
  torch::jit::ExtraFilesMap extra{{"kaizen.json", *json}};
  if (!tokenizer.empty()) extra.emplace("kaizen_tokenizer", tokenizer);
  module.save(path, extra);
  return path;
}

// An encoder returning what `body` computes from its embeddings `x` [N, T, 8].
torch::jit::Module Encoder(const std::string& body) {
  torch::jit::Module m = NewModule("Encoder");
  m.register_parameter("table", at::randn({8, 8}), false);
  m.define(
      "def forward(self, input_ids, attention_mask):\n"
      "    x = torch.embedding(self.table, input_ids)\n"
      "    return " +
      body + "\n");
  return m;
}

TEST(TorchScriptInspectorTest, ATracedBertIsAnEncoderThatNeedsAHead) {
  std::optional<UploadedEncoder> encoder;
  absl::StatusOr<kaizen::v1::Model> model =
      InspectTorchScriptFile(KAIZEN_FIXTURE_DIR "/tiny_bert.pt", {}, &encoder);
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_TRUE(encoder.has_value());
  EXPECT_EQ(encoder->output, EncoderOutput::kTupleHiddenStates);
  EXPECT_EQ(encoder->hidden_size, 32);
  // The pooler's output is not read: it is no block.
  EXPECT_EQ(encoder->blocks,
            (std::vector<std::string>{"encoder.embeddings", "encoder.encoder.layer.0",
                                      "encoder.encoder.layer.1"}));
  EXPECT_EQ(model->architecture(), "tiny-bert");
  EXPECT_TRUE(model->has_text_input());
  EXPECT_EQ(model->text_input().tokenizer(), kaizen::v1::TOKENIZER_KIND_WORDPIECE);
  EXPECT_EQ(model->text_input().max_length(), 32);
  EXPECT_TRUE(model->head().module_path().empty());
  EXPECT_TRUE(model->input_shape().empty());
  EXPECT_GT(model->parameter_count(), 0);
}

TEST(TorchScriptInspectorTest, HiddenStatesOrAPooledVectorAreEncodersToo) {
  test_util::TempDir dir;
  kaizen::v1::Model meta;
  *meta.mutable_text_input() = WordPieceInput(kVocab, 8);
  std::optional<UploadedEncoder> encoder;
  ASSERT_TRUE(
      InspectTorchScriptFile(SaveText(Encoder("x"), meta, kVocab, dir.File("h.pt")), {}, &encoder)
          .ok());
  ASSERT_TRUE(encoder.has_value());
  EXPECT_EQ(encoder->output, EncoderOutput::kHiddenStates);
  EXPECT_EQ(encoder->hidden_size, 8);
  ASSERT_TRUE(InspectTorchScriptFile(SaveText(Encoder("x.mean(1)"), meta, kVocab, dir.File("p.pt")),
                                     {}, &encoder)
                  .ok());
  ASSERT_TRUE(encoder.has_value());
  EXPECT_EQ(encoder->output, EncoderOutput::kPooled);
}

TEST(TorchScriptInspectorTest, AKaizenTextClassifierKeepsItsHead) {
  test_util::TempDir dir;
  TextEncoderOptions o;
  o.vocab_size = 8;
  o.max_length = 16;
  o.hidden_size = 16;
  o.num_layers = 1;
  o.num_heads = 2;
  o.intermediate_size = 32;
  o.num_classes = 3;
  absl::StatusOr<torch::jit::Module> m = CreateTextEncoder(o);
  ASSERT_TRUE(m.ok());
  kaizen::v1::Model meta;
  meta.set_architecture("transformer-small");
  *meta.mutable_text_input() = WordPieceInput(kVocab, 8);
  meta.mutable_head()->set_module_path("fc");
  for (const char* c : {"a", "b", "c"}) meta.add_class_names(c);
  const std::string path = dir.File("c.pt");
  ASSERT_TRUE(SaveModelFile(*m, meta, path, kVocab).ok());
  std::optional<UploadedEncoder> encoder;
  absl::StatusOr<kaizen::v1::Model> model = InspectTorchScriptFile(path, {}, &encoder);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_FALSE(encoder.has_value());
  EXPECT_EQ(model->head().module_path(), "fc");
  EXPECT_EQ(model->head().out_features(), 3);
  EXPECT_EQ(model->class_names_size(), 3);
  EXPECT_EQ(model->text_input().vocab_size(), 8);
}

TEST(TorchScriptInspectorTest, ATextModelsTokenizerMustBeTheOneItNames) {
  test_util::TempDir dir;
  kaizen::v1::Model meta;
  *meta.mutable_text_input() = WordPieceInput(kVocab, 8);
  absl::StatusOr<kaizen::v1::Model> missing =
      InspectTorchScriptFile(SaveText(Encoder("x"), meta, "", dir.File("a.pt")), {});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(missing.status().message(), HasSubstr("must carry its tokenizer"));
  absl::StatusOr<kaizen::v1::Model> other =
      InspectTorchScriptFile(SaveText(Encoder("x"), meta, "[PAD]\nother\n", dir.File("b.pt")), {});
  EXPECT_EQ(other.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(other.status().message(), HasSubstr("SHA-256"));
}

TEST(TorchScriptInspectorTest, TextModelsAreRefusedWithReasons) {
  test_util::TempDir dir;
  kaizen::v1::Model meta;
  *meta.mutable_text_input() = WordPieceInput(kVocab, 8);
  // An output that is neither hidden states nor one vector per text.
  absl::StatusOr<kaizen::v1::Model> scalar =
      InspectTorchScriptFile(SaveText(Encoder("x.sum()"), meta, kVocab, dir.File("s.pt")), {});
  EXPECT_EQ(scalar.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(scalar.status().message(), HasSubstr("it must return hidden states"));
  // An encoder has no classes of its own.
  InspectOptions named;
  named.class_names = {"a", "b"};
  absl::StatusOr<kaizen::v1::Model> classes =
      InspectTorchScriptFile(SaveText(Encoder("x"), meta, kVocab, dir.File("c.pt")), named);
  EXPECT_THAT(classes.status().message(), HasSubstr("names no head"));
  // Image options make no sense for text.
  InspectOptions image;
  image.input_shape = {3, 32, 32};
  EXPECT_THAT(InspectTorchScriptFile(dir.File("c.pt"), image).status().message(),
              HasSubstr("this is a text model"));
  // An encoder with fewer embedding rows than the vocabulary it declares.
  meta.mutable_text_input()->set_vocab_size(9);
  absl::StatusOr<kaizen::v1::Model> rows =
      InspectTorchScriptFile(SaveText(Encoder("x"), meta, kVocab, dir.File("r.pt")), {});
  EXPECT_THAT(rows.status().message(), HasSubstr("forward(input_ids, attention_mask)"));
  meta.mutable_text_input()->set_vocab_size(8);
  // Ids the vocabulary does not have.
  meta.mutable_text_input()->set_pad_id(8);
  absl::StatusOr<kaizen::v1::Model> pad =
      InspectTorchScriptFile(SaveText(Encoder("x"), meta, kVocab, dir.File("d.pt")), {});
  EXPECT_THAT(pad.status().message(), HasSubstr("text_input.pad_id is 8"));
  // A forward that fails on ids and a mask says so.
  meta.mutable_text_input()->set_pad_id(0);
  absl::StatusOr<kaizen::v1::Model> fails = InspectTorchScriptFile(
      SaveText(Encoder("x + attention_mask.view([-1, 3, 3])"), meta, kVocab, dir.File("e.pt")), {});
  EXPECT_THAT(fails.status().message(), HasSubstr("forward(input_ids, attention_mask)"));
}

}  // namespace
}  // namespace kaizen::models
