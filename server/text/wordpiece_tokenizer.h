// BERT's WordPiece tokenizer: a vocabulary file (vocab.txt, one token a line,
// its id the line's number) and the normalisation BERT models are trained
// with. It gives the ids Hugging Face's `tokenizers` gives for the same
// vocabulary with BertNormalizer, BertPreTokenizer and the WordPiece model
// (tested token for token against it), without the special tokens a post
// processor adds.
//
// Normalisation, in this order, each step optional as in BERT's config:
//   clean text     drop NUL, U+FFFD and control, format and private-use
//                  characters (categories Cc, Cf, Co, Cs) except tab, CR and
//                  LF (unassigned ones stay, as Hugging Face's do);
//                  every white space character becomes a space
//   CJK            put spaces around each CJK ideograph, so that each is a word
//   strip accents  Unicode NFD, then drop nonspacing marks (category Mn)
//   lower case     each character's Unicode lower case (İ becomes i and a
//                  combining dot above, as in Rust's char::to_lowercase)
// Unicode data comes from Debian's libutf8proc. Then words are split at
// white space, and every punctuation character (ASCII punctuation, or a
// Unicode P* category) is a word of its own. Each word becomes its longest
// vocabulary prefix, then the longest "##"-continuation of the rest, and so
// on; a word with a rest that no token matches, or longer than
// max_input_chars_per_word characters, is one unknown token.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kaizen::text {

struct WordPieceOptions {
  bool lowercase = true;
  // Unset: follows `lowercase`, as BERT's tokenizers do.
  std::optional<bool> strip_accents;
  bool clean_text = true;
  bool handle_chinese_chars = true;
  int max_input_chars_per_word = 100;
  std::string unk_token = "[UNK]";
  std::string continuing_subword_prefix = "##";
};

// Bounds on a vocabulary file, which comes with an uploaded model.
struct WordPieceLimits {
  int64_t max_vocab_bytes = int64_t{16} << 20;
  int64_t max_tokens = 1'000'000;
  int64_t max_token_bytes = 200;
};

class WordPieceTokenizer {
 public:
  // InvalidArgument (naming the line) for a vocabulary that is not UTF-8,
  // has a token over the limit, lacks the unknown token, or for options out
  // of range; ResourceExhausted past the size limits. A token listed twice
  // takes the later line's id, as in Hugging Face's reader.
  static absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> Create(
      absl::string_view vocab_txt, WordPieceOptions options, const WordPieceLimits& limits = {});

  // The ids of `utf8` (bytes that are not UTF-8 count as U+FFFD). Thread-safe.
  std::vector<int32_t> Encode(absl::string_view utf8) const;
  // The tokens of the same ids.
  std::vector<std::string> Tokenize(absl::string_view utf8) const;
  // The words after normalisation and splitting, joined by single spaces.
  std::string Normalize(absl::string_view utf8) const;

  // The id of `token`, or -1.
  int32_t Id(absl::string_view token) const;
  int32_t unk_id() const { return unk_id_; }
  // One more than the largest id.
  int32_t vocab_size() const { return vocab_size_; }

 private:
  WordPieceTokenizer() = default;
  // Normalises and splits into words, each as code points.
  std::vector<std::u32string> Words(absl::string_view utf8) const;
  // Appends the ids of one word (as pieces when `pieces` is set).
  void EncodeWord(const std::u32string& word, std::vector<int32_t>* ids,
                  std::vector<std::string>* pieces) const;

  WordPieceOptions options_;
  absl::flat_hash_map<std::string, int32_t> vocab_;
  std::vector<std::string> tokens_;  // by id
  int32_t unk_id_ = 0;
  int32_t vocab_size_ = 0;
};

}  // namespace kaizen::text
