#include "server/training/text_model.h"

#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/common/sha256.h"
#include "server/common/status_macros.h"
#include "server/text/sentencepiece_tokenizer.h"

namespace kaizen::training {
namespace {

constexpr int64_t kMaxVocab = 1'000'000;
constexpr int64_t kMaxLength = 4096;

bool IsLowerHex64(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!absl::ascii_isdigit(c) && !(c >= 'a' && c <= 'f')) return false;
  }
  return true;
}

absl::Status IdInRange(absl::string_view field, int32_t id, int32_t lowest, int32_t vocab) {
  if (id < lowest || id >= vocab) {
    return absl::InvalidArgumentError(
        absl::StrFormat("text_input.%s is %d; it must be in [%d, %d) (vocab_size %d)", field, id,
                        lowest, vocab, vocab));
  }
  return absl::OkStatus();
}

text::SequenceOptions SequenceOptionsOf(const kaizen::v1::TextInput& input) {
  text::SequenceOptions o;
  o.max_length = input.max_length();
  o.first_id = input.first_id();
  o.last_id = input.last_id();
  o.pad_id = input.pad_id();
  o.keep_end = input.keep_end();
  return o;
}

}  // namespace

absl::Status ValidateTextInput(const kaizen::v1::TextInput& input) {
  if (input.tokenizer() != kaizen::v1::TOKENIZER_KIND_SENTENCEPIECE &&
      input.tokenizer() != kaizen::v1::TOKENIZER_KIND_WORDPIECE) {
    return absl::InvalidArgumentError(
        "text_input.tokenizer must be TOKENIZER_KIND_SENTENCEPIECE or TOKENIZER_KIND_WORDPIECE");
  }
  if (!IsLowerHex64(input.tokenizer_sha256())) {
    return absl::InvalidArgumentError(
        "text_input.tokenizer_sha256 must be the tokenizer file's SHA-256 as 64 lower-case hex "
        "digits");
  }
  if (input.vocab_size() < 2 || input.vocab_size() > kMaxVocab) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "text_input.vocab_size is %d; it must be in [2, %d]", input.vocab_size(), kMaxVocab));
  }
  if (input.max_length() < 2 || input.max_length() > kMaxLength) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "text_input.max_length is %d; it must be in [2, %d]", input.max_length(), kMaxLength));
  }
  RETURN_IF_ERROR(IdInRange("first_id", input.first_id(), -1, input.vocab_size()));
  RETURN_IF_ERROR(IdInRange("last_id", input.last_id(), -1, input.vocab_size()));
  RETURN_IF_ERROR(IdInRange("mask_id", input.mask_id(), -1, input.vocab_size()));
  RETURN_IF_ERROR(IdInRange("pad_id", input.pad_id(), 0, input.vocab_size()));
  if (absl::Status s = text::ValidateSequenceOptions(SequenceOptionsOf(input)); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("text_input: ", s.message()));
  }
  if (input.pooling() != kaizen::v1::TEXT_POOLING_FIRST_TOKEN &&
      input.pooling() != kaizen::v1::TEXT_POOLING_MASKED_MEAN) {
    return absl::InvalidArgumentError(
        "text_input.pooling must be TEXT_POOLING_FIRST_TOKEN or TEXT_POOLING_MASKED_MEAN");
  }
  if (input.tokenizer() == kaizen::v1::TOKENIZER_KIND_SENTENCEPIECE && input.has_wordpiece()) {
    return absl::InvalidArgumentError(
        "text_input.wordpiece is set but the tokenizer is a SentencePiece model (it normalises "
        "by its own rules)");
  }
  return absl::OkStatus();
}

text::WordPieceOptions ToWordPieceOptions(const kaizen::v1::WordPieceOptions& p) {
  text::WordPieceOptions o;
  if (p.has_lower_case()) o.lowercase = p.lower_case();
  if (p.has_strip_accents()) o.strip_accents = p.strip_accents();
  if (p.has_clean_text()) o.clean_text = p.clean_text();
  if (p.has_handle_chinese_chars()) o.handle_chinese_chars = p.handle_chinese_chars();
  if (!p.unk_token().empty()) o.unk_token = p.unk_token();
  if (p.max_input_chars_per_word() > 0) o.max_input_chars_per_word = p.max_input_chars_per_word();
  if (!p.continuing_subword_prefix().empty()) {
    o.continuing_subword_prefix = p.continuing_subword_prefix();
  }
  return o;
}

kaizen::v1::TextPooling ToProto(models::TextPooling pooling) {
  return pooling == models::TextPooling::kFirstToken ? kaizen::v1::TEXT_POOLING_FIRST_TOKEN
                                                     : kaizen::v1::TEXT_POOLING_MASKED_MEAN;
}

models::TextPooling FromProto(kaizen::v1::TextPooling pooling) {
  return pooling == kaizen::v1::TEXT_POOLING_MASKED_MEAN ? models::TextPooling::kMaskedMean
                                                         : models::TextPooling::kFirstToken;
}

absl::StatusOr<TextModelInput> TextModelInput::Load(const kaizen::v1::TextInput& input,
                                                    std::string_view tokenizer_file,
                                                    const TextModelLimits& limits) {
  RETURN_IF_ERROR(ValidateTextInput(input));
  if (static_cast<int64_t>(tokenizer_file.size()) > limits.max_tokenizer_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("the tokenizer file is %d bytes, over the limit of %d",
                        tokenizer_file.size(), limits.max_tokenizer_bytes));
  }
  const std::string digest =
      common::Sha256Hex(absl::string_view(tokenizer_file.data(), tokenizer_file.size()));
  if (digest != input.tokenizer_sha256()) {
    return absl::InvalidArgumentError(absl::StrCat("the tokenizer file's SHA-256 is ", digest,
                                                   " but text_input.tokenizer_sha256 is ",
                                                   input.tokenizer_sha256()));
  }
  TextModelInput result;
  if (input.tokenizer() == kaizen::v1::TOKENIZER_KIND_SENTENCEPIECE) {
    text::TokenizerLimits spm;
    spm.max_model_bytes = limits.max_tokenizer_bytes;
    spm.max_text_bytes = limits.max_text_bytes;
    ASSIGN_OR_RETURN(result.tokenizer_, text::SentencePieceTokenizer::Load(tokenizer_file, spm));
  } else {
    text::WordPieceLimits wordpiece;
    wordpiece.max_vocab_bytes = limits.max_tokenizer_bytes;
    wordpiece.max_text_bytes = limits.max_text_bytes;
    ASSIGN_OR_RETURN(result.tokenizer_,
                     text::WordPieceTokenizer::Create(
                         absl::string_view(tokenizer_file.data(), tokenizer_file.size()),
                         ToWordPieceOptions(input.wordpiece()), wordpiece));
  }
  if (result.tokenizer_->vocab_size() != input.vocab_size()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the tokenizer has %d ids but text_input.vocab_size is %d",
                        result.tokenizer_->vocab_size(), input.vocab_size()));
  }
  result.sequence_ = SequenceOptionsOf(input);
  result.input_ = input;
  result.max_text_bytes_ = limits.max_text_bytes;
  return result;
}

absl::StatusOr<std::vector<int32_t>> TextModelInput::Encode(std::string_view text) const {
  ASSIGN_OR_RETURN(std::vector<int32_t> ids,
                   tokenizer_->Encode(text::CutText(text, max_text_bytes_, input_.keep_end())));
  return text::FrameSequence(ids, sequence_);
}

absl::StatusOr<kaizen::v1::Model> DescribeTextEncoder(const models::TextEncoderOptions& options,
                                                      kaizen::v1::TextInput input) {
  RETURN_IF_ERROR(models::ValidateTextEncoderOptions(options));
  input.set_vocab_size(static_cast<int32_t>(options.vocab_size));
  input.set_max_length(static_cast<int32_t>(options.max_length));
  input.set_pooling(ToProto(options.pooling));
  RETURN_IF_ERROR(ValidateTextInput(input));
  kaizen::v1::Model model;
  model.set_version(1);
  model.set_source(kaizen::v1::MODEL_SOURCE_BUILTIN);
  model.set_architecture(std::string(models::kTransformerSmall));
  model.set_description(absl::StrFormat(
      "BERT-style text encoder: %d post-LayerNorm layers of %d-head self-attention, hidden %d, "
      "feed-forward %d, %s pooling, linear head",
      options.num_layers, options.num_heads, options.hidden_size, options.intermediate_size,
      options.pooling == models::TextPooling::kFirstToken ? "first-token" : "masked-mean"));
  kaizen::v1::ModelHead* head = model.mutable_head();
  head->set_module_path("fc");
  head->set_kind(kaizen::v1::HEAD_KIND_LINEAR);
  head->set_in_features(options.hidden_size);
  head->set_out_features(options.num_classes);
  model.set_parameter_count(models::TextEncoderParameterCount(options));
  *model.mutable_text_input() = std::move(input);
  return model;
}

}  // namespace kaizen::training
