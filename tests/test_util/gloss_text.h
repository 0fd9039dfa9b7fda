// WordNet's glosses (wordnet.h) made ready for the text encoders' tests: a
// SentencePiece model trained on them in the test, and glosses tokenised and
// framed as a text model takes them.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/text/sentencepiece_tokenizer.h"
#include "server/text/sequences.h"
#include "tests/test_util/temp_dir.h"

namespace kaizen::test_util {

// The ids of the model GlossSentencePiece trains: SentencePiece's unk, BOS
// (framing start), EOS (framing end) and padding, and a user-defined [MASK].
inline constexpr int32_t kGlossBos = 1;
inline constexpr int32_t kGlossEos = 2;
inline constexpr int32_t kGlossPad = 3;
inline constexpr int32_t kGlossMask = 4;

// A unigram SentencePiece model of `vocab_size` pieces trained (in `dir`) on
// `texts`, loaded.
absl::StatusOr<std::unique_ptr<text::SentencePieceTokenizer>> GlossSentencePiece(
    const TempDir& dir, const std::vector<std::string>& texts, int vocab_size);

// Each text encoded and framed by BOS and EOS, cut to `max_length`.
absl::StatusOr<std::vector<std::vector<int32_t>>> FrameTexts(const text::Tokenizer& tokenizer,
                                                             const std::vector<std::string>& texts,
                                                             int32_t max_length);

}  // namespace kaizen::test_util
