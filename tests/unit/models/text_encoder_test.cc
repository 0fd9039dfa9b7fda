#include "server/models/text_encoder.h"

#include <torch/torch.h>

#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/models/builtin_models.h"

namespace kaizen::models {
namespace {

using ::testing::HasSubstr;

TextEncoderOptions Small(TextPooling pooling = TextPooling::kFirstToken, uint64_t seed = 0) {
  TextEncoderOptions o;
  o.vocab_size = 300;
  o.max_length = 40;
  o.hidden_size = 32;
  o.num_layers = 2;
  o.num_heads = 4;
  o.intermediate_size = 64;
  o.num_classes = 5;
  o.pooling = pooling;
  o.seed = seed;
  return o;
}

torch::jit::Module Create(const TextEncoderOptions& o) {
  absl::StatusOr<torch::jit::Module> m = CreateTextEncoder(o);
  EXPECT_TRUE(m.ok()) << m.status();
  return *m;
}

at::Tensor Call(torch::jit::Module& m, const std::string& method, const at::Tensor& ids,
                const at::Tensor& mask) {
  torch::NoGradGuard no_grad;
  return m.get_method(method)({ids, mask}).toTensor();
}

// Rows of random ids (5..vocab) of the given lengths, padded with 0 to `width`.
std::pair<at::Tensor, at::Tensor> Padded(const std::vector<int64_t>& lengths, int64_t width,
                                         uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor ids = at::randint(5, 300, {static_cast<int64_t>(lengths.size()), width}, gen,
                               torch::TensorOptions(torch::kLong));
  at::Tensor mask = at::zeros_like(ids);
  for (size_t r = 0; r < lengths.size(); ++r) mask[r].narrow(0, 0, lengths[r]).fill_(1);
  return {ids.masked_fill(mask.eq(0), 0), mask};
}

TEST(TextEncoderTest, ShapesOfEveryMethod) {
  for (TextPooling pooling : {TextPooling::kFirstToken, TextPooling::kMaskedMean}) {
    torch::jit::Module m = Create(Small(pooling));
    m.eval();
    auto [ids, mask] = Padded({7, 12, 3}, 12, 1);
    EXPECT_EQ(Call(m, "forward_hidden", ids, mask).sizes(), (std::vector<int64_t>{3, 12, 32}));
    EXPECT_EQ(Call(m, "forward_features", ids, mask).sizes(), (std::vector<int64_t>{3, 32}));
    EXPECT_EQ(Call(m, "forward", ids, mask).sizes(), (std::vector<int64_t>{3, 5}));
  }
}

TEST(TextEncoderTest, ParameterCountMatchesTheModule) {
  for (const TextEncoderOptions& o : {Small(), [] {
                                        TextEncoderOptions big = Small();
                                        big.vocab_size = 1000;
                                        big.hidden_size = 48;
                                        big.num_heads = 3;
                                        big.num_layers = 3;
                                        big.intermediate_size = 100;
                                        big.num_classes = 2;
                                        return big;
                                      }()}) {
    torch::jit::Module m = Create(o);
    int64_t n = 0;
    for (const at::Tensor& p : m.parameters()) {
      n += p.numel();
      EXPECT_TRUE(p.requires_grad());
    }
    EXPECT_EQ(n, TextEncoderParameterCount(o));
  }
}

// The top-level children are the blocks "fine-tune the top N" counts.
TEST(TextEncoderTest, ChildrenAreEmbeddingsLayersAndHead) {
  torch::jit::Module m = Create(Small());
  std::vector<std::string> names;
  for (const auto& child : m.named_children()) names.push_back(child.name);
  EXPECT_EQ(names, (std::vector<std::string>{"embeddings", "layer1", "layer2", "fc"}));
  EXPECT_EQ(m.attr("fc").toModule().attr("weight").toTensor().sizes(),
            (std::vector<int64_t>{5, 32}));
}

TEST(TextEncoderTest, ASavedEncoderDescribesItself) {
  TextEncoderOptions o = Small(TextPooling::kMaskedMean);
  o.dropout = 0.25;
  torch::jit::Module m = Create(o);
  std::stringstream bytes;
  m.save(bytes);
  absl::StatusOr<TextEncoderOptions> read = TextEncoderOptionsOf(torch::jit::load(bytes));
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->vocab_size, o.vocab_size);
  EXPECT_EQ(read->max_length, o.max_length);
  EXPECT_EQ(read->hidden_size, o.hidden_size);
  EXPECT_EQ(read->num_layers, o.num_layers);
  EXPECT_EQ(read->num_heads, o.num_heads);
  EXPECT_EQ(read->intermediate_size, o.intermediate_size);
  EXPECT_EQ(read->pooling, TextPooling::kMaskedMean);
  EXPECT_EQ(read->dropout, 0.25);
  EXPECT_EQ(read->num_classes, o.num_classes);
  absl::StatusOr<torch::jit::Module> cnn = CreateBuiltinModel("cnn-small", BuiltinOptions{});
  ASSERT_TRUE(cnn.ok());
  EXPECT_THAT(TextEncoderOptionsOf(*cnn).status().message(), HasSubstr("not a transformer-small"));
}

TEST(TextEncoderTest, TheSeedDecidesTheWeights) {
  torch::jit::Module a = Create(Small(TextPooling::kFirstToken, 7));
  torch::jit::Module b = Create(Small(TextPooling::kFirstToken, 7));
  torch::jit::Module c = Create(Small(TextPooling::kFirstToken, 8));
  auto pa = a.named_parameters();
  auto pb = b.named_parameters();
  auto pc = c.named_parameters();
  bool any_differs = false;
  for (auto ia = pa.begin(), ib = pb.begin(), ic = pc.begin(); ia != pa.end(); ++ia, ++ib, ++ic) {
    EXPECT_TRUE(at::equal((*ia).value, (*ib).value)) << (*ia).name;
    any_differs = any_differs || !at::equal((*ia).value, (*ic).value);
  }
  EXPECT_TRUE(any_differs);
}

// Padding is invisible: each text gets the same features alone, in a batch
// padded to its longest row, and in a batch padded far beyond it.
TEST(TextEncoderTest, PaddingChangesNothing) {
  for (TextPooling pooling : {TextPooling::kFirstToken, TextPooling::kMaskedMean}) {
    SCOPED_TRACE(pooling == TextPooling::kFirstToken ? "first token" : "masked mean");
    torch::jit::Module m = Create(Small(pooling, 3));
    m.eval();
    const std::vector<int64_t> lengths = {5, 9, 12};
    auto [ids, mask] = Padded(lengths, 12, 2);
    const at::Tensor tight = Call(m, "forward", ids, mask);
    const at::Tensor wide_ids = at::cat({ids, at::zeros({3, 28}, torch::kLong)}, 1);
    const at::Tensor wide_mask = at::cat({mask, at::zeros({3, 28}, torch::kLong)}, 1);
    EXPECT_TRUE(at::allclose(Call(m, "forward", wide_ids, wide_mask), tight, 1e-5, 1e-5));
    for (size_t r = 0; r < lengths.size(); ++r) {
      const at::Tensor alone_ids = ids[r].narrow(0, 0, lengths[r]).unsqueeze(0);
      const at::Tensor alone = Call(m, "forward", alone_ids, at::ones_like(alone_ids));
      EXPECT_TRUE(at::allclose(alone[0], tight[r], 1e-5, 1e-5)) << "row " << r;
    }
    // And the padding's ids do not matter either.
    const at::Tensor other_pad = ids.masked_fill(mask.eq(0), 77);
    EXPECT_TRUE(at::allclose(Call(m, "forward", other_pad, mask), tight, 1e-5, 1e-5));
    // While a real token does.
    at::Tensor changed = ids.clone();
    changed[0][1] = 6;
    if (ids[0][1].item<int64_t>() == 6) changed[0][1] = 8;
    EXPECT_FALSE(at::allclose(Call(m, "forward", changed, mask)[0], tight[0], 1e-5, 1e-5));
  }
}

TEST(TextEncoderTest, SavedAndLoadedItComputesTheSame) {
  torch::jit::Module m = Create(Small(TextPooling::kMaskedMean, 4));
  m.eval();
  std::stringstream bytes;
  m.save(bytes);
  torch::jit::Module loaded = torch::jit::load(bytes);
  loaded.eval();
  auto [ids, mask] = Padded({4, 10}, 10, 5);
  EXPECT_TRUE(at::equal(Call(loaded, "forward", ids, mask), Call(m, "forward", ids, mask)));
  EXPECT_TRUE(at::equal(Call(loaded, "forward_features", ids, mask),
                        Call(m, "forward_features", ids, mask)));
}

TEST(TextEncoderTest, DropoutActsOnlyWhileTraining) {
  torch::jit::Module m = Create(Small());
  auto [ids, mask] = Padded({10, 10}, 10, 6);
  m.train();
  const at::Tensor a = Call(m, "forward", ids, mask);
  const at::Tensor b = Call(m, "forward", ids, mask);
  EXPECT_FALSE(at::equal(a, b));
  m.eval();
  EXPECT_TRUE(at::equal(Call(m, "forward", ids, mask), Call(m, "forward", ids, mask)));
}

TEST(TextEncoderTest, OptionsOutOfRangeAreNamed) {
  auto error = [](TextEncoderOptions o) {
    absl::StatusOr<torch::jit::Module> m = CreateTextEncoder(o);
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(m.status().message());
  };
  TextEncoderOptions o = Small();
  o.vocab_size = 1;
  EXPECT_THAT(error(o), HasSubstr("vocab_size must be in [2, 1000000], got 1"));
  o = Small();
  o.hidden_size = 30;
  EXPECT_THAT(error(o), HasSubstr("hidden_size (30) must be a multiple of num_heads (4)"));
  o = Small();
  o.dropout = 0.95;
  EXPECT_THAT(error(o), HasSubstr("dropout"));
  o = Small();
  o.max_length = 5000;
  EXPECT_THAT(error(o), HasSubstr("max_length"));
  o = Small();
  o.num_layers = 0;
  EXPECT_THAT(error(o), HasSubstr("num_layers"));
}

TEST(TextEncoderTest, AnInputLongerThanMaxLengthFails) {
  torch::jit::Module m = Create(Small());
  auto [ids, mask] = Padded({41}, 41, 1);
  EXPECT_ANY_THROW(Call(m, "forward", ids, mask));
}

TEST(MaskedLanguageModelTest, PredictsEveryPositionAndTrainsTheEncoderItself) {
  torch::jit::Module encoder = Create(Small());
  absl::StatusOr<torch::jit::Module> mlm = CreateMaskedLanguageModel(encoder, 1);
  ASSERT_TRUE(mlm.ok()) << mlm.status();
  auto [ids, mask] = Padded({6, 9}, 9, 3);
  at::Tensor logits = mlm->forward({ids, mask}).toTensor();
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 9, 300}));
  logits.sum().backward();
  const at::Tensor words = encoder.attr("embeddings").toModule().attr("word_embeddings").toTensor();
  ASSERT_TRUE(words.grad().defined());
  EXPECT_GT(words.grad().abs().sum().item<double>(), 0.0);
  // The encoder's head is not part of the language model.
  EXPECT_FALSE(encoder.attr("fc").toModule().attr("weight").toTensor().grad().defined());
  // The wrapper holds the encoder, not a copy: changing one changes the other.
  mlm->eval();
  const at::Tensor before = mlm->forward({ids, mask}).toTensor().detach();
  {
    torch::NoGradGuard no_grad;
    words.mul_(2.0);
  }
  EXPECT_FALSE(at::allclose(mlm->forward({ids, mask}).toTensor(), before));
}

TEST(MaskedLanguageModelTest, RefusesAModelWithoutWordEmbeddings) {
  BuiltinOptions image;
  absl::StatusOr<torch::jit::Module> cnn = CreateBuiltinModel("cnn-small", image);
  ASSERT_TRUE(cnn.ok());
  absl::StatusOr<torch::jit::Module> mlm = CreateMaskedLanguageModel(*cnn, 0);
  EXPECT_EQ(mlm.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(mlm.status().message(), HasSubstr("embeddings.word_embeddings"));
}

// tools/package_text_encoder.py --tiny_bert: a BERT-shaped encoder traced in
// Python (embeddings, encoder.layer.0..1, an unused-by-us pooler) returning
// (hidden states [N, T, 32], pooled [N, 32]); 22 vocabulary ids.
torch::jit::Module TinyBert() { return torch::jit::load(KAIZEN_FIXTURE_DIR "/tiny_bert.pt"); }

at::Tensor Probe() { return at::arange(2, 12, torch::kLong).view({2, 5}); }

std::vector<std::string> Blocks(const torch::jit::Module& m) {
  std::vector<std::string> out;
  for (const c10::IValue& b : m.attr(std::string(kBlocksAttribute)).toListRef()) {
    out.push_back(b.toStringRef());
  }
  return out;
}

TEST(WrapTextEncoderTest, PutsAHeadOnATracedBert) {
  torch::jit::Module bert = TinyBert();
  UploadedEncoder shape{EncoderOutput::kTupleHiddenStates, 32, {}};
  absl::StatusOr<torch::jit::Module> m =
      WrapTextEncoder(bert, shape, TextPooling::kFirstToken, 3, 7);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE(Blocks(*m).empty());
  // The pooler's output is not read, so it is no block to fine-tune.
  absl::StatusOr<std::vector<std::string>> blocks =
      FindEncoderBlocks(*m, 32, Probe(), at::ones_like(Probe()));
  ASSERT_TRUE(blocks.ok()) << blocks.status();
  EXPECT_EQ(*blocks, (std::vector<std::string>{"encoder.embeddings", "encoder.encoder.layer.0",
                                               "encoder.encoder.layer.1"}));
  shape.blocks = *blocks;
  m = WrapTextEncoder(bert, shape, TextPooling::kFirstToken, 3, 7);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(Blocks(*m), *blocks);
  auto [ids, mask] = Padded({4, 7}, 7, 1);
  ids = ids.remainder(22);
  m->eval();
  EXPECT_EQ(Call(*m, "forward", ids, mask).sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(Call(*m, "forward_hidden", ids, mask).sizes(), (std::vector<int64_t>{2, 7, 32}));
  // First-token pooling: the features are the hidden state at position 0.
  EXPECT_TRUE(at::allclose(Call(*m, "forward_features", ids, mask),
                           Call(*m, "forward_hidden", ids, mask).select(1, 0)));
  EXPECT_EQ(m->attr("fc").toModule().attr("weight").toTensor().sizes(),
            (std::vector<int64_t>{3, 32}));
  // Saved and loaded, it computes the same.
  std::stringstream saved;
  m->save(saved);
  torch::jit::Module loaded = torch::jit::load(saved);
  loaded.eval();
  EXPECT_TRUE(at::allclose(Call(loaded, "forward", ids, mask), Call(*m, "forward", ids, mask)));
  // Blocks the encoder does not have are refused.
  shape.blocks = {"encoder.nothing"};
  EXPECT_THAT(WrapTextEncoder(bert, shape, TextPooling::kFirstToken, 3, 7).status().message(),
              HasSubstr("\"encoder.nothing\" is no submodule"));
}

TEST(WrapTextEncoderTest, MaskedMeanLeavesPaddingOut) {
  absl::StatusOr<torch::jit::Module> m = WrapTextEncoder(
      TinyBert(), {EncoderOutput::kTupleHiddenStates, 32, {}}, TextPooling::kMaskedMean, 2, 7);
  ASSERT_TRUE(m.ok()) << m.status();
  m->eval();
  const at::Tensor ids = torch::tensor(std::vector<int64_t>{2, 9, 10, 3, 0, 0}).view({1, 6});
  const at::Tensor mask = torch::tensor(std::vector<int64_t>{1, 1, 1, 1, 0, 0}).view({1, 6});
  const at::Tensor padded = Call(*m, "forward_features", ids, mask);
  const at::Tensor hidden = Call(*m, "forward_hidden", ids, mask);
  EXPECT_TRUE(at::allclose(padded, hidden.narrow(1, 0, 4).mean(1), 1e-5, 1e-6));
  const at::Tensor unpadded =
      Call(*m, "forward_features", ids.narrow(1, 0, 4), mask.narrow(1, 0, 4));
  EXPECT_TRUE(at::allclose(padded, unpadded, 1e-4, 1e-5));
}

torch::jit::Module PooledEncoder(bool detached) {
  // One vector per text: the mean of its embeddings.
  torch::jit::Module enc(c10::QualifiedName("__torch__.test.Pooled"),
                         std::make_shared<torch::jit::CompilationUnit>());
  enc.register_attribute("training", c10::BoolType::get(), true);
  enc.register_parameter("table", at::randn({22, 8}).set_requires_grad(true), false);
  enc.define(detached ? R"(
def forward(self, input_ids, attention_mask):
    return torch.embedding(self.table, input_ids).mean(1).detach()
)"
                      : R"(
def forward(self, input_ids, attention_mask):
    return torch.embedding(self.table, input_ids).mean(1)
)");
  return enc;
}

TEST(WrapTextEncoderTest, PooledOutputIsTheFeatures) {
  absl::StatusOr<torch::jit::Module> m = WrapTextEncoder(
      PooledEncoder(false), {EncoderOutput::kPooled, 8, {}}, TextPooling::kFirstToken, 4, 1);
  ASSERT_TRUE(m.ok()) << m.status();
  const at::Tensor ids = Probe();
  // An encoder without children lists no blocks (it is one block).
  absl::StatusOr<std::vector<std::string>> blocks =
      FindEncoderBlocks(*m, 8, ids, at::ones_like(ids));
  ASSERT_TRUE(blocks.ok()) << blocks.status();
  EXPECT_TRUE(blocks->empty());
  m->eval();
  EXPECT_EQ(Call(*m, "forward", ids, at::ones_like(ids)).sizes(), (std::vector<int64_t>{2, 4}));
  EXPECT_FALSE(m->find_method("forward_hidden").has_value());
}

TEST(WrapTextEncoderTest, FeaturesOfAnotherWidthOrWithoutGradientsAreRefused) {
  const at::Tensor ids = Probe();
  absl::StatusOr<torch::jit::Module> m = WrapTextEncoder(
      TinyBert(), {EncoderOutput::kTupleHiddenStates, 16, {}}, TextPooling::kFirstToken, 2, 7);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_THAT(FindEncoderBlocks(*m, 16, ids, at::ones_like(ids)).status().message(),
              HasSubstr("not [2,16]"));
  m = WrapTextEncoder(PooledEncoder(true), {EncoderOutput::kPooled, 8, {}},
                      TextPooling::kFirstToken, 2, 7);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_THAT(FindEncoderBlocks(*m, 8, ids, at::ones_like(ids)).status().message(),
              HasSubstr("nothing to fine-tune"));
  EXPECT_EQ(
      WrapTextEncoder(TinyBert(), {EncoderOutput::kPooled, 0, {}}, TextPooling::kFirstToken, 2, 7)
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kaizen::models
