// A text model's input (issue 20): its metadata (Model.text_input) and the
// tokenizer file it carries (models::ReadModelTokenizer) made into a
// tokenizer and the framing of its ids. Training and Predict both go
// through here, so a text is turned into ids the same way when a model
// learns and when it serves.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kaizen/v1/model_service.pb.h"
#include "server/models/text_encoder.h"
#include "server/text/sequences.h"
#include "server/text/wordpiece_tokenizer.h"

namespace kaizen::training {

struct TextModelLimits {
  // The tokenizer file (SentencePiece models of 250,000 pieces are about
  // 5 MiB, BERT's vocab.txt 230 KiB).
  int64_t max_tokenizer_bytes = int64_t{16} << 20;
  // One text.
  int64_t max_text_bytes = int64_t{64} << 10;
};

// InvalidArgument naming the field: a tokenizer kind or pooling that is
// unset, a tokenizer_sha256 that is not 64 lower-case hex digits, a
// vocab_size outside [2, 1,000,000], a max_length outside [2, 4096] or too
// short for the framing and one id, a first_id, last_id or mask_id outside
// [-1, vocab_size), a pad_id outside [0, vocab_size), WordPiece options on a
// SentencePiece model.
absl::Status ValidateTextInput(const kaizen::v1::TextInput& input);

// The tokenizer options a TextInput's WordPieceOptions stand for (BERT's
// defaults where unset).
text::WordPieceOptions ToWordPieceOptions(const kaizen::v1::WordPieceOptions& options);

// Between the proto's pooling and the encoder's.
kaizen::v1::TextPooling ToProto(models::TextPooling pooling);
models::TextPooling FromProto(kaizen::v1::TextPooling pooling);

class TextModelInput {
 public:
  // ValidateTextInput, then the tokenizer from `tokenizer_file`: its SHA-256
  // must be input.tokenizer_sha256 and its vocabulary input.vocab_size ids.
  // InvalidArgument naming what disagrees; ResourceExhausted over
  // limits.max_tokenizer_bytes; FailedPrecondition when SentencePiece
  // cannot be loaded.
  static absl::StatusOr<TextModelInput> Load(const kaizen::v1::TextInput& input,
                                             std::string_view tokenizer_file,
                                             const TextModelLimits& limits = {});

  // The ids of `text` framed and cut to max_length (text::FrameSequence).
  // A text over limits.max_text_bytes is first cut there at a character
  // boundary (its start kept, or its end with keep_end): max_length ids
  // come from far fewer bytes, so training and serving see the same ids
  // and no text is refused for its length. InvalidArgument for a text the
  // tokenizer refuses (not UTF-8).
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text) const;

  const text::Tokenizer& tokenizer() const { return *tokenizer_; }
  const text::SequenceOptions& sequence_options() const { return sequence_; }
  const kaizen::v1::TextInput& input() const { return input_; }

 private:
  std::shared_ptr<const text::Tokenizer> tokenizer_;
  int64_t max_text_bytes_ = 0;
  text::SequenceOptions sequence_;
  kaizen::v1::TextInput input_;
};

// The metadata of a transformer-small built with `options` whose input is
// `input`: source BUILTIN, version 1, architecture transformer-small, head
// "fc" (LINEAR, hidden_size -> num_classes), parameter_count, text_input
// (its vocab_size, max_length and pooling taken from `options`). The caller
// sets name, class names and timestamps. InvalidArgument for options out of
// range or an input ValidateTextInput refuses.
absl::StatusOr<kaizen::v1::Model> DescribeTextEncoder(const models::TextEncoderOptions& options,
                                                      kaizen::v1::TextInput input);

}  // namespace kaizen::training
