// From token ids to what a text encoder takes (issue 20): one text framed by
// its special tokens and cut to the model's length, and a batch of them as
// input_ids and attention_mask, padded to the batch's longest row rather
// than to the maximum; and an order of the examples that puts texts of
// similar lengths in the same batches, so that little of a batch is padding.
// The same code frames and pads what training reads and what Predict is
// sent. Torch-free: the caller makes tensors of the flat rows.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace kaizen::text {

// A tokenizer as a text model uses it (SentencePieceTokenizer,
// WordPieceTokenizer).
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // The ids of `text`, without special tokens. InvalidArgument for a text
  // the tokenizer refuses (over its size limit; see each tokenizer).
  virtual absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text) const = 0;
  // One more than the largest id.
  virtual int32_t vocab_size() const = 0;
};

// `text` cut to at most `max_bytes` bytes without splitting a UTF-8
// character: its start, or with `keep_end` its end. A negative `max_bytes`
// keeps all of it. At most 3 bytes past the budget are given up; a longer
// run of continuation bytes is not UTF-8 and stays for the tokenizer to
// refuse.
std::string_view CutText(std::string_view text, int64_t max_bytes, bool keep_end);

// How a text becomes one model input.
struct SequenceOptions {
  // Tokens per sequence, special tokens included; longer texts are cut.
  int32_t max_length = 128;
  // Put before and after the text's ids when >= 0 (BERT's [CLS] and [SEP];
  // a SentencePiece model's BOS and EOS).
  int32_t first_id = -1;
  int32_t last_id = -1;
  // What padding positions hold (their attention_mask is 0).
  int32_t pad_id = 0;
  // Which end of a long text is kept: its start (default), or its end.
  bool keep_end = false;
};

// InvalidArgument when `max_length` cannot hold the special tokens and one
// id, or an id is negative.
absl::Status ValidateSequenceOptions(const SequenceOptions& options);

// `ids` framed: first_id, the ids (cut to fit max_length), last_id.
std::vector<int32_t> FrameSequence(absl::Span<const int32_t> ids, const SequenceOptions& options);

// Rows padded to the longest of them: `rows` x `length`, row-major.
struct PaddedBatch {
  int64_t rows = 0;
  int64_t length = 0;
  std::vector<int32_t> input_ids;
  std::vector<uint8_t> attention_mask;  // 1 for a token, 0 for padding
};

// The sequences (each framed, none empty) padded with `pad_id` to the
// longest. An empty list gives an empty batch.
PaddedBatch PadToLongest(const std::vector<std::vector<int32_t>>& sequences, int32_t pad_id);

// An order of examples 0..lengths.size()-1 for one epoch, seeded: shuffled,
// then sorted by length within windows of `window_batches` batches, and the
// batches of each window shuffled again, so that each batch holds texts of
// similar lengths while the epoch's order stays random. window_batches 1
// gives a plain shuffle (batches drawn at random, any lengths together).
std::vector<int64_t> LengthBucketedOrder(absl::Span<const int32_t> lengths, int64_t batch_size,
                                         uint64_t seed, int64_t window_batches = 50);

// The share of a batch list's positions that are padding (0 to 1), for
// `order` cut into batches of `batch_size` with each padded to its longest.
double PaddingShare(absl::Span<const int32_t> lengths, absl::Span<const int64_t> order,
                    int64_t batch_size);

}  // namespace kaizen::text
