// The built-in text encoder (issue 20): a small BERT-style transformer
// built in C++ as an ordinary TorchScript module, so that the trainer can
// pretrain, fine-tune, save and reload it exactly like an uploaded
// TorchScript encoder, and so that transfer can be shown without
// downloading any weights.
//
// The module (`transformer-small`):
//   embeddings   word and position embeddings (parameters
//                embeddings.word_embeddings, .position_embeddings), LayerNorm,
//                dropout
//   layer1..N    post-LayerNorm encoder layers as in BERT: multi-head
//                self-attention that ignores padded positions, then a GELU
//                feed-forward block, each with a residual and a LayerNorm
//   fc           the classification head (Linear), replaced to fit a
//                dataset's classes like an image model's `fc`
// and its methods, each taking input_ids [N, T] (int64) and attention_mask
// [N, T] (1 for a token, 0 for padding; any integer or float type), T at most
// max_length:
//   forward_hidden(ids, mask)   -> hidden states [N, T, hidden_size]
//   forward_features(ids, mask) -> pooled [N, hidden_size]: the first
//                                  token's state, or the mean over the
//                                  tokens the mask keeps (TextPooling)
//   forward(ids, mask)          -> logits [N, num_classes]
// A padded position changes nothing the other positions compute, so a text
// gets the same features whatever the length it was padded to.
//
// The top-level children (embeddings, layer1..N, fc) are the blocks that
// "fine-tune the top N blocks" counts (training/freezing.h).
//
// CreateMaskedLanguageModel wraps an encoder for masked-language-model
// pretraining with BERT's prediction head, its decoder tied to the word
// embeddings.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kaizen::models {

inline constexpr absl::string_view kTransformerSmall = "transformer-small";

enum class TextPooling {
  kFirstToken,  // BERT's [CLS] position
  kMaskedMean,  // the mean of the hidden states of the tokens, padding left out
};

struct TextEncoderOptions {
  // Ids are 0..vocab_size-1 (the tokenizer's vocabulary); 2..1,000,000.
  int64_t vocab_size = 0;
  // Positions, special tokens included: the longest input; 2..4,096.
  int64_t max_length = 128;
  // Width of every hidden state; a multiple of num_heads, 8..2,048.
  int64_t hidden_size = 128;
  int64_t num_layers = 2;  // 1..48
  int64_t num_heads = 4;   // 1..64
  // Width of each layer's feed-forward block; 1..16,384.
  int64_t intermediate_size = 512;
  // Dropout on embeddings, attention probabilities and each residual
  // branch while training; [0, 0.9].
  double dropout = 0.1;
  TextPooling pooling = TextPooling::kFirstToken;
  int64_t num_classes = 2;  // 1..100,000
  // Seeds the initial weights; the same seed gives the same weights. The
  // global torch RNG is neither used nor changed.
  uint64_t seed = 0;
};

// InvalidArgument naming the first option out of range.
// The architecture's options are stored in the module as attributes
// (text_vocab_size, text_max_length, text_hidden_size, text_num_layers,
// text_num_heads, text_intermediate_size, text_pooling, text_dropout), so
// that a saved encoder describes itself; TextEncoderOptionsOf reads them.
absl::Status ValidateTextEncoderOptions(const TextEncoderOptions& options);

// How many parameters CreateTextEncoder's module has (a test checks they
// agree).
int64_t TextEncoderParameterCount(const TextEncoderOptions& options);

// A freshly initialised encoder in training mode whose parameters all
// require grad. BERT's init: embeddings and linear weights N(0, 0.02),
// biases 0, LayerNorm weight 1 / bias 0; the head `fc` gets torch.nn.Linear's
// default like the image built-ins' heads.
absl::StatusOr<torch::jit::Module> CreateTextEncoder(const TextEncoderOptions& options);

// The options `module` was built with (num_classes from its head `fc`, seed
// 0). InvalidArgument when it is not a CreateTextEncoder module.
absl::StatusOr<TextEncoderOptions> TextEncoderOptionsOf(const torch::jit::Module& module);

// How an uploaded text encoder's forward(input_ids, attention_mask) answers
// (the sandboxed inspection finds out, torchscript_inspector.h).
enum class EncoderOutput {
  kHiddenStates,       // a tensor [N, T, hidden]
  kTupleHiddenStates,  // a tuple whose first element is [N, T, hidden] (a
                       // traced Hugging Face BERT: last_hidden_state, pooler_output)
  kPooled,             // a tensor [N, hidden]: one vector per text, pooled already
};

struct UploadedEncoder {
  EncoderOutput output = EncoderOutput::kHiddenStates;
  int64_t hidden_size = 0;
  // The encoder's blocks, bottom to top, as FindEncoderBlocks found them:
  // dotted paths in the wrapper ("encoder.embeddings", ...).
  std::vector<std::string> blocks;
};

// The attribute WrapTextEncoder leaves on its module: the dotted paths of
// the encoder's blocks, bottom to top, that "fine-tune the top N blocks"
// counts (training/freezing.h reads it).
inline constexpr absl::string_view kBlocksAttribute = "kaizen_blocks";

// The largest hidden size WrapTextEncoder accepts.
inline constexpr int64_t kMaxUploadedHiddenSize = 65536;

// An uploaded text encoder made into a classifier with the interface of
// CreateTextEncoder's module: submodule `encoder` is `encoder` itself (not
// a copy), `fc` a new Linear [num_classes, hidden_size] (torch.nn.Linear's
// init, seeded), and the methods forward_hidden (not for kPooled),
// forward_features (the first token's state or the masked mean, by
// `pooling`; kPooled's vector as it is) and forward. shape.blocks become
// its kBlocksAttribute; each must be a submodule with parameters. Nothing
// of the encoder runs here: the methods are compiled, not called.
// InvalidArgument when the wrapper cannot be built.
absl::StatusOr<torch::jit::Module> WrapTextEncoder(const torch::jit::Module& encoder,
                                                   const UploadedEncoder& shape,
                                                   TextPooling pooling, int64_t num_classes,
                                                   uint64_t seed);

// Runs WrapTextEncoder's module on `ids` and `mask` ([N, T]) and finds the
// encoder's blocks, bottom to top: its top-level children with parameters,
// a numbered list of layers (a ModuleList such as BERT's encoder.layer)
// counted layer by layer, leaving out a block whose parameters get no
// gradient from the features (BERT's pooler, when the hidden states are
// read). It runs the encoder's code: the sandboxed inspector calls it.
// InvalidArgument when the features are not [N, hidden_size] or no
// parameter of the encoder gets a gradient from them.
absl::StatusOr<std::vector<std::string>> FindEncoderBlocks(torch::jit::Module& wrapped,
                                                           int64_t hidden_size,
                                                           const at::Tensor& ids,
                                                           const at::Tensor& mask);

// A module for masked-language-model pretraining of `encoder` (one with
// forward_hidden and a 2-D parameter embeddings.word_embeddings, as
// CreateTextEncoder builds): submodule `encoder` is `encoder` itself, not a copy, so training
// the wrapper trains it. forward(ids, mask) -> logits over the vocabulary
// [N, T, vocab_size]: dense, GELU and LayerNorm on each hidden state, then
// the word embeddings' transpose plus a bias. InvalidArgument when `encoder`
// lacks what the head needs.
absl::StatusOr<torch::jit::Module> CreateMaskedLanguageModel(const torch::jit::Module& encoder,
                                                             uint64_t seed);

}  // namespace kaizen::models
