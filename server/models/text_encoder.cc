#include "server/models/text_encoder.h"

#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <exception>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "server/models/module_builder.h"
#include "server/models/torch_errors.h"

namespace kaizen::models {
namespace {

// BERT's initializer_range and layer_norm_eps.
constexpr double kInitStd = 0.02;
constexpr double kLayerNormEps = 1e-12;
// Added to the attention scores of padded positions: exp() of it is 0 in
// float32, and it still fits float16 under autocast.
constexpr double kMaskedScore = -10000.0;

// A float literal TorchScript reads as a float ("0.0", not "0").
std::string FloatLiteral(double v) {
  std::string s = absl::StrFormat("%.17g", v);
  if (s.find_first_of(".eE") == std::string::npos) s += ".0";
  return s;
}

// forward_features from forward_hidden: the first token's state, or the
// mean over the positions the mask keeps.
const char* PoolingSource(TextPooling pooling) {
  return pooling == TextPooling::kFirstToken ? R"(
def forward_features(self, input_ids, attention_mask):
    return self.forward_hidden(input_ids, attention_mask).select(1, 0)
)"
                                             : R"(
def forward_features(self, input_ids, attention_mask):
    h = self.forward_hidden(input_ids, attention_mask)
    m = attention_mask.to(h.dtype).unsqueeze(2)
    return torch.sum(h * m, [1]) / torch.clamp_min(torch.sum(m, [1]), 1.0)
)";
}

absl::Status OutOfRange(absl::string_view name, int64_t lo, int64_t hi, int64_t got) {
  return absl::InvalidArgumentError(
      absl::StrFormat("text encoder option %s must be in [%d, %d], got %d", name, lo, hi, got));
}

std::vector<std::pair<std::string, int64_t>> IntAttributes(const TextEncoderOptions& o) {
  return {{"text_vocab_size", o.vocab_size},
          {"text_max_length", o.max_length},
          {"text_hidden_size", o.hidden_size},
          {"text_num_layers", o.num_layers},
          {"text_num_heads", o.num_heads},
          {"text_intermediate_size", o.intermediate_size},
          {"text_pooling", o.pooling == TextPooling::kFirstToken ? 0 : 1}};
}

class TextBuilder : public ModuleBuilder {
 public:
  explicit TextBuilder(const TextEncoderOptions& o)
      : ModuleBuilder(o.seed), o_(o), dropout_(FloatLiteral(o.dropout)) {}

  torch::jit::Module Encoder() {
    torch::jit::Module root = NewModule("TextEncoder");
    root.register_module("embeddings", Embeddings());
    std::string hidden = absl::StrFormat(R"(
def forward_hidden(self, input_ids, attention_mask):
    x = self.embeddings.forward(input_ids)
    bias = (1.0 - attention_mask.to(x.dtype)).unsqueeze(1).unsqueeze(2) * %s
)",
                                         FloatLiteral(kMaskedScore));
    for (int64_t i = 1; i <= o_.num_layers; ++i) {
      const std::string name = absl::StrCat("layer", i);
      root.register_module(name, Layer());
      absl::StrAppend(&hidden, "    x = self.", name, ".forward(x, bias)\n");
    }
    absl::StrAppend(&hidden, "    return x\n");
    root.register_module("fc", Linear(o_.hidden_size, o_.num_classes));
    for (const auto& [name, value] : IntAttributes(o_)) {
      root.register_attribute(name, c10::IntType::get(), value);
    }
    root.register_attribute("text_dropout", c10::FloatType::get(), o_.dropout);
    root.define(hidden);
    root.define(PoolingSource(o_.pooling));
    root.define(R"(
def forward(self, input_ids, attention_mask):
    return self.fc.forward(self.forward_features(input_ids, attention_mask))
)");
    return root;
  }

 private:
  at::Tensor Normal(at::IntArrayRef sizes) {
    return at::empty(sizes).normal_(0.0, kInitStd, generator());
  }

  // A linear layer with BERT's init (the head keeps torch.nn.Linear's).
  torch::jit::Module Dense(int64_t in, int64_t out) {
    torch::jit::Module m = NewModule("Dense");
    AddParameter(m, "weight", Normal({out, in}));
    AddParameter(m, "bias", at::zeros({out}));
    m.define(R"(
def forward(self, x):
    return torch.linear(x, self.weight, self.bias)
)");
    return m;
  }

  torch::jit::Module LayerNorm() {
    torch::jit::Module m = NewModule("LayerNorm");
    AddParameter(m, "weight", at::ones({o_.hidden_size}));
    AddParameter(m, "bias", at::zeros({o_.hidden_size}));
    m.define(absl::StrFormat(R"(
def forward(self, x):
    return torch.layer_norm(x, [%d], self.weight, self.bias, %s)
)",
                             o_.hidden_size, FloatLiteral(kLayerNormEps)));
    return m;
  }

  torch::jit::Module Embeddings() {
    torch::jit::Module m = NewModule("Embeddings");
    AddParameter(m, "word_embeddings", Normal({o_.vocab_size, o_.hidden_size}));
    AddParameter(m, "position_embeddings", Normal({o_.max_length, o_.hidden_size}));
    m.register_module("norm", LayerNorm());
    m.define(absl::StrFormat(R"(
def forward(self, input_ids):
    positions = self.position_embeddings.narrow(0, 0, input_ids.size(1))
    x = torch.embedding(self.word_embeddings, input_ids) + positions.unsqueeze(0)
    return torch.dropout(self.norm.forward(x), %s, self.training)
)",
                             dropout_));
    return m;
  }

  torch::jit::Module Layer() {
    torch::jit::Module m = NewModule("EncoderLayer");
    for (const char* name : {"query", "key", "value", "attention_output"}) {
      m.register_module(name, Dense(o_.hidden_size, o_.hidden_size));
    }
    m.register_module("attention_norm", LayerNorm());
    m.register_module("intermediate", Dense(o_.hidden_size, o_.intermediate_size));
    m.register_module("output", Dense(o_.intermediate_size, o_.hidden_size));
    m.register_module("output_norm", LayerNorm());
    const int64_t head_size = o_.hidden_size / o_.num_heads;
    m.define(absl::StrFormat(
        R"(
def split_heads(self, x, n: int, t: int):
    return x.view(n, t, %d, %d).transpose(1, 2)

def forward(self, x, bias):
    n = x.size(0)
    t = x.size(1)
    q = self.split_heads(self.query.forward(x), n, t)
    k = self.split_heads(self.key.forward(x), n, t)
    v = self.split_heads(self.value.forward(x), n, t)
    scores = torch.matmul(q, k.transpose(2, 3)) * %s + bias
    probs = torch.dropout(torch.softmax(scores, -1), %s, self.training)
    context = torch.matmul(probs, v).transpose(1, 2).reshape(n, t, %d)
    attended = torch.dropout(self.attention_output.forward(context), %s, self.training)
    x = self.attention_norm.forward(x + attended)
    y = self.output.forward(torch.gelu(self.intermediate.forward(x)))
    return self.output_norm.forward(x + torch.dropout(y, %s, self.training))
)",
        o_.num_heads, head_size, FloatLiteral(1.0 / std::sqrt(static_cast<double>(head_size))),
        dropout_, o_.hidden_size, dropout_, dropout_));
    return m;
  }

  const TextEncoderOptions& o_;
  const std::string dropout_;
};

}  // namespace

absl::Status ValidateTextEncoderOptions(const TextEncoderOptions& o) {
  struct Bound {
    absl::string_view name;
    int64_t value, lo, hi;
  };
  for (const Bound& b :
       {Bound{"vocab_size", o.vocab_size, 2, 1000000}, Bound{"max_length", o.max_length, 2, 4096},
        Bound{"hidden_size", o.hidden_size, 8, 2048}, Bound{"num_layers", o.num_layers, 1, 48},
        Bound{"num_heads", o.num_heads, 1, 64},
        Bound{"intermediate_size", o.intermediate_size, 1, 16384},
        Bound{"num_classes", o.num_classes, 1, 100000}}) {
    if (b.value < b.lo || b.value > b.hi) return OutOfRange(b.name, b.lo, b.hi, b.value);
  }
  if (o.hidden_size % o.num_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("text encoder option hidden_size (%d) must be a multiple of num_heads (%d)",
                        o.hidden_size, o.num_heads));
  }
  if (!(o.dropout >= 0.0 && o.dropout <= 0.9)) {
    return absl::InvalidArgumentError(
        absl::StrCat("text encoder option dropout must be in [0, 0.9], got ", o.dropout));
  }
  return absl::OkStatus();
}

int64_t TextEncoderParameterCount(const TextEncoderOptions& o) {
  const int64_t h = o.hidden_size;
  const int64_t norm = 2 * h;
  const int64_t embeddings = (o.vocab_size + o.max_length) * h + norm;
  const int64_t layer = 4 * (h * h + h) + norm + (h * o.intermediate_size + o.intermediate_size) +
                        (o.intermediate_size * h + h) + norm;
  return embeddings + o.num_layers * layer + h * o.num_classes + o.num_classes;
}

absl::StatusOr<torch::jit::Module> CreateTextEncoder(const TextEncoderOptions& options) {
  if (absl::Status s = ValidateTextEncoderOptions(options); !s.ok()) return s;
  try {
    TextBuilder builder(options);
    torch::jit::Module module = builder.Encoder();
    module.train();
    return module;
  } catch (const std::exception& e) {
    // A bug in the TorchScript sources above, or no memory for the weights.
    return absl::InternalError(absl::StrCat("building ", kTransformerSmall, " failed: ", e.what()));
  }
}

absl::StatusOr<TextEncoderOptions> TextEncoderOptionsOf(const torch::jit::Module& module) {
  const absl::Status not_ours =
      absl::InvalidArgumentError(absl::StrCat("the model is not a ", kTransformerSmall,
                                              " text encoder (its text_* attributes are missing)"));
  std::map<std::string, int64_t> ints;
  for (const auto& [name, unused] : IntAttributes(TextEncoderOptions{})) {
    if (!module.hasattr(name) || !module.attr(name).isInt()) return not_ours;
    ints[name] = module.attr(name).toInt();
  }
  if (!module.hasattr("text_dropout") || !module.attr("text_dropout").isDouble() ||
      !module.hasattr("fc")) {
    return not_ours;
  }
  const c10::IValue fc = module.attr("fc");
  if (!fc.isModule() || !fc.toModule().hasattr("weight") ||
      !fc.toModule().attr("weight").isTensor() ||
      fc.toModule().attr("weight").toTensor().dim() != 2) {
    return not_ours;
  }
  TextEncoderOptions o;
  o.vocab_size = ints["text_vocab_size"];
  o.max_length = ints["text_max_length"];
  o.hidden_size = ints["text_hidden_size"];
  o.num_layers = ints["text_num_layers"];
  o.num_heads = ints["text_num_heads"];
  o.intermediate_size = ints["text_intermediate_size"];
  o.pooling = ints["text_pooling"] == 0 ? TextPooling::kFirstToken : TextPooling::kMaskedMean;
  o.dropout = module.attr("text_dropout").toDouble();
  o.num_classes = fc.toModule().attr("weight").toTensor().size(0);
  if (absl::Status s = ValidateTextEncoderOptions(o); !s.ok()) return not_ours;
  return o;
}

namespace {

bool HasParameters(const torch::jit::Module& m) {
  for (const auto& p : m.named_parameters(/*recurse=*/true)) {
    (void)p;
    return true;
  }
  return false;
}

// A ModuleList or Sequential of layers: two or more children, all numbered.
bool IsNumberedList(const torch::jit::Module& m) {
  size_t children = 0;
  for (const auto& child : m.named_children()) {
    if (child.name.empty() || child.name.find_first_not_of("0123456789") != std::string::npos) {
      return false;
    }
    ++children;
  }
  return children >= 2;
}

bool HoldsNumberedList(const torch::jit::Module& m) {
  for (const auto& child : m.named_children()) {
    if (IsNumberedList(child.value) || HoldsNumberedList(child.value)) return true;
  }
  return false;
}

// The blocks under `m` (named from `prefix`), bottom to top in the order the
// module lists its children: each child with parameters, a numbered list's
// layers one by one.
void ListEncoderBlocks(const torch::jit::Module& m, const std::string& prefix,
                       std::vector<std::string>* out) {
  for (const auto& child : m.named_children()) {
    if (!HasParameters(child.value)) continue;
    const std::string name = absl::StrCat(prefix, ".", child.name);
    if (IsNumberedList(child.value)) {
      for (const auto& layer : child.value.named_children()) {
        if (HasParameters(layer.value)) out->push_back(absl::StrCat(name, ".", layer.name));
      }
    } else if (HoldsNumberedList(child.value)) {
      ListEncoderBlocks(child.value, name, out);
    } else {
      out->push_back(name);
    }
  }
}

}  // namespace

absl::StatusOr<torch::jit::Module> WrapTextEncoder(const torch::jit::Module& encoder,
                                                   const UploadedEncoder& shape,
                                                   TextPooling pooling, int64_t num_classes,
                                                   uint64_t seed) {
  if (shape.hidden_size < 1 || shape.hidden_size > kMaxUploadedHiddenSize || num_classes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("a text encoder's hidden size (", shape.hidden_size, ") must be in [1, ",
                     kMaxUploadedHiddenSize, "] and its class count (", num_classes, ") positive"));
  }
  try {
    ModuleBuilder builder(seed);
    torch::jit::Module root = builder.NewModule("UploadedTextClassifier");
    root.register_module("encoder", encoder);
    root.register_module("fc", builder.Linear(shape.hidden_size, num_classes));
    if (shape.output == EncoderOutput::kPooled) {
      root.define(R"(
def forward_features(self, input_ids, attention_mask):
    return self.encoder.forward(input_ids, attention_mask)
)");
    } else {
      root.define(shape.output == EncoderOutput::kHiddenStates ? R"(
def forward_hidden(self, input_ids, attention_mask):
    return self.encoder.forward(input_ids, attention_mask)
)"
                                                               : R"(
def forward_hidden(self, input_ids, attention_mask):
    return self.encoder.forward(input_ids, attention_mask)[0]
)");
      root.define(PoolingSource(pooling));
    }
    root.define(R"(
def forward(self, input_ids, attention_mask):
    return self.fc.forward(self.forward_features(input_ids, attention_mask))
)");
    c10::List<std::string> blocks;
    for (const std::string& block : shape.blocks) {
      bool found = false;
      for (const auto& m : root.named_modules()) {
        if (m.name == block && m.name != "fc" && !absl::StartsWith(m.name, "fc.") &&
            HasParameters(m.value)) {
          found = true;
          break;
        }
      }
      if (!found) {
        return absl::InvalidArgumentError(
            absl::StrCat("block \"", absl::CHexEscape(block),
                         "\" is no submodule of the encoder with parameters"));
      }
      blocks.push_back(block);
    }
    root.register_attribute(std::string(kBlocksAttribute), c10::ListType::ofStrings(), blocks);
    root.train();
    return root;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "wrapping the text encoder with a classification head failed: ", TorchErrorSummary(e)));
  }
}

absl::StatusOr<std::vector<std::string>> FindEncoderBlocks(torch::jit::Module& wrapped,
                                                           int64_t hidden_size,
                                                           const at::Tensor& ids,
                                                           const at::Tensor& mask) {
  if (!wrapped.hasattr("encoder") || !wrapped.attr("encoder").isModule() ||
      !wrapped.find_method("forward_features")) {
    return absl::InvalidArgumentError("not a module WrapTextEncoder built");
  }
  try {
    std::vector<std::string> candidates;
    ListEncoderBlocks(wrapped.attr("encoder").toModule(), "encoder", &candidates);
    std::vector<at::Tensor> params;
    std::vector<std::string> names;
    for (const auto& p : wrapped.named_parameters(/*recurse=*/true)) {
      if (!absl::StartsWith(p.name, "encoder.") || !p.value.is_floating_point()) continue;
      names.push_back(p.name);
      params.push_back(p.value);
    }
    if (params.empty()) {
      return absl::InvalidArgumentError("the encoder has no floating-point parameters to train");
    }
    std::vector<bool> had_grad(params.size());
    for (size_t i = 0; i < params.size(); ++i) {
      had_grad[i] = params[i].requires_grad();
      params[i].set_requires_grad(true);
    }
    absl::Cleanup restore = [&] {
      for (size_t i = 0; i < params.size(); ++i) params[i].set_requires_grad(had_grad[i]);
    };
    c10::AutoGradMode grad_mode(true);
    wrapped.eval();
    const c10::IValue out = wrapped.get_method("forward_features")({ids, mask});
    if (!out.isTensor() || out.toTensor().dim() != 2 || out.toTensor().size(0) != ids.size(0) ||
        out.toTensor().size(1) != hidden_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the encoder's features are ",
          out.isTensor() ? absl::StrCat("[", absl::StrJoin(out.toTensor().sizes(), ","), "]")
                         : out.tagKind(),
          ", not [", ids.size(0), ",", hidden_size, "]"));
    }
    const at::Tensor features = out.toTensor();
    if (!features.requires_grad()) {
      return absl::InvalidArgumentError(
          "the encoder's output does not depend on its parameters (detached, or saved under "
          "torch.no_grad): there is nothing to fine-tune");
    }
    const std::vector<at::Tensor> grads =
        torch::autograd::grad({features.sum()}, params, /*grad_outputs=*/{},
                              /*retain_graph=*/false, /*create_graph=*/false,
                              /*allow_unused=*/true);
    std::vector<bool> learns(params.size());
    bool any = false;
    for (size_t i = 0; i < params.size(); ++i) {
      learns[i] = grads[i].defined() && grads[i].abs().sum().item<double>() > 0;
      any = any || learns[i];
    }
    if (!any) {
      return absl::InvalidArgumentError(
          "no parameter of the encoder gets a gradient from its output: there is nothing to "
          "fine-tune");
    }
    std::vector<std::string> blocks;
    for (const std::string& block : candidates) {
      for (size_t i = 0; i < params.size(); ++i) {
        if (learns[i] && (names[i] == block || absl::StartsWith(names[i], block + "."))) {
          blocks.push_back(block);
          break;
        }
      }
    }
    return blocks;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "running the text encoder's features backwards failed: ", TorchErrorSummary(e)));
  }
}

absl::StatusOr<torch::jit::Module> CreateMaskedLanguageModel(const torch::jit::Module& encoder,
                                                             uint64_t seed) {
  at::Tensor words;
  if (encoder.find_method("forward_hidden") && encoder.hasattr("embeddings")) {
    const c10::IValue embeddings = encoder.attr("embeddings");
    if (embeddings.isModule() && embeddings.toModule().hasattr("word_embeddings")) {
      const c10::IValue w = embeddings.toModule().attr("word_embeddings");
      if (w.isTensor()) words = w.toTensor();
    }
  }
  if (!words.defined() || words.dim() != 2 || words.size(0) < 2 || words.size(1) < 1) {
    return absl::InvalidArgumentError(
        "masked-language-model pretraining needs a text encoder with a forward_hidden method and "
        "a 2-D parameter embeddings.word_embeddings [vocab, hidden], as transformer-small has");
  }
  const int64_t vocab = words.size(0);
  const int64_t hidden = words.size(1);
  try {
    ModuleBuilder builder(seed);
    torch::jit::Module root = builder.NewModule("MaskedLanguageModel");
    root.register_module("encoder", encoder);
    torch::jit::Module transform = builder.NewModule("Dense");
    ModuleBuilder::AddParameter(
        transform, "weight",
        at::empty({hidden, hidden}).normal_(0.0, kInitStd, builder.generator()));
    ModuleBuilder::AddParameter(transform, "bias", at::zeros({hidden}));
    transform.define(R"(
def forward(self, x):
    return torch.linear(x, self.weight, self.bias)
)");
    root.register_module("transform", transform);
    ModuleBuilder::AddParameter(root, "norm_weight", at::ones({hidden}));
    ModuleBuilder::AddParameter(root, "norm_bias", at::zeros({hidden}));
    ModuleBuilder::AddParameter(root, "decoder_bias", at::zeros({vocab}));
    root.define(absl::StrFormat(R"(
def forward(self, input_ids, attention_mask):
    h = self.encoder.forward_hidden(input_ids, attention_mask)
    h = torch.gelu(self.transform.forward(h))
    h = torch.layer_norm(h, [%d], self.norm_weight, self.norm_bias, %s)
    return torch.linear(h, self.encoder.embeddings.word_embeddings, self.decoder_bias)
)",
                                hidden, FloatLiteral(kLayerNormEps)));
    root.train();
    return root;
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("building the masked-language-model head failed: ", e.what()));
  }
}

}  // namespace kaizen::models
