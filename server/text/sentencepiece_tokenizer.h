// Tokenisation of text for the text encoders (issue 20): a SentencePiece
// model (a serialized sentencepiece.ModelProto, as `spm_train` writes and as
// a model upload carries it) run by Debian's libsentencepiece, the reference
// implementation itself, so ids match Python's `sentencepiece` token for
// token (tests/unit/text/sentencepiece_tokenizer_test.cc checks it on
// WordNet's glosses). The library is reached through
// libkaizen_sentencepiece.so, loaded into a link-map namespace of its own
// (dlmopen; sentencepiece_shim/sentencepiece_shim.cc says why); it is looked for at
// $KAIZEN_SENTENCEPIECE_LIBRARY, beside the running executable, then in the
// build tree.
//
// The library trusts a model's precompiled character map: the fuzz target
// (fuzz/sentencepiece_tokenizer_fuzzer.cc) found, within 29 runs, a read out
// of bounds in SentencePiece 0.1.97's normalizer (Normalizer::NormalizePrefix
// -> strlen) on a mutated map. So Load pins the maps first: each must be empty
// or one SentencePiece builds itself for one of its named rules (read once
// from small models it trains in memory).
//
// Both the model bytes and the texts come from the network: the model is
// bounded in size before it is parsed, a text in bytes, and a text must be
// valid UTF-8 before SentencePiece sees it.
#ifndef KAIZEN_SERVER_TEXT_SENTENCEPIECE_TOKENIZER_H_
#define KAIZEN_SERVER_TEXT_SENTENCEPIECE_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/text/sequences.h"

namespace kaizen::text {

struct TokenizerLimits {
  // The serialized model (SentencePiece models of 32,000 pieces are under
  // 1 MiB; 250,000-piece multilingual ones about 5 MiB).
  int64_t max_model_bytes = int64_t{16} << 20;
  // One text.
  int64_t max_text_bytes = int64_t{64} << 10;
};

class SentencePieceTokenizer : public Tokenizer {
 public:
  // Parses a serialized ModelProto. InvalidArgument when it is over
  // `limits.max_model_bytes`, carries a character map SentencePiece does not
  // build itself, or is not a model SentencePiece can run (its message says
  // why).
  // FailedPrecondition when libkaizen_sentencepiece.so cannot be loaded.
  static absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> Load(
      std::string_view model_bytes, const TokenizerLimits& limits = {});
  ~SentencePieceTokenizer() override;
  SentencePieceTokenizer(const SentencePieceTokenizer&) = delete;
  SentencePieceTokenizer& operator=(const SentencePieceTokenizer&) = delete;

  // The ids of `text`'s pieces, without BOS or EOS, as
  // SentencePieceProcessor::Encode gives them (the model's own normalisation
  // applies). InvalidArgument naming the byte offset for invalid UTF-8, or
  // the limit for a text over it. Safe to call from several threads; calls
  // into the library take turns (one process-wide lock).
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text) const override;

  // The piece of an id (for reports and tests); empty when out of range.
  std::string Piece(int32_t id) const;

  int32_t vocab_size() const override;
  // -1 when the model has none.
  int32_t unk_id() const;
  int32_t bos_id() const;
  int32_t eos_id() const;
  int32_t pad_id() const;

 private:
  SentencePieceTokenizer(void* processor, TokenizerLimits limits);

  void* processor_;  // the library's SentencePieceProcessor
  TokenizerLimits limits_;
  int32_t info_[5] = {};  // vocab_size, unk, bos, eos, pad
};

// Trains a SentencePiece model with spm_train's flags (e.g. "--input=F
// --model_prefix=P --vocab_size=N"), through the same library.
absl::Status TrainSentencePieceModel(const std::string& flags);

// The same on the lines of `corpus` ('\n'-separated), in memory: `flags`
// has no --input or --model_prefix, nothing is read or written, and the
// serialized model comes back. It holds the lock every SentencePiece call
// takes while it trains: the server runs it in kaizen-tokenizer-trainer, a
// process of its own (server/jobs/tokenizer_training.h).
absl::StatusOr<std::string> TrainSentencePieceModelOnLines(const std::string& flags,
                                                           absl::string_view corpus);

// Loads libkaizen_sentencepiece.so now (it is loaded on first use
// otherwise): a sandboxed process does so before it confines itself.
absl::Status LoadSentencePieceLibrary();

}  // namespace kaizen::text

#endif  // KAIZEN_SERVER_TEXT_SENTENCEPIECE_TOKENIZER_H_
