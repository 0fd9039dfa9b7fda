// What a text model does with the texts a client sends (Predict's
// inputs[i].text, the Open Inference Protocol's BYTES elements) before the
// model sees them, in the order TextModelInput::Encode and the batcher do
// it: each text cut to a byte budget at a character boundary (CutText),
// tokenised, framed to max_length (FrameSequence), and the batch padded to
// its longest row (PadToLongest). The input is a 4-byte little-endian length
// N, N bytes of serialized SentencePiece model, one byte of options (bit 0:
// keep the text's end; bits 1-7: max_length - 3), then the texts separated
// by '\n'. Checks: a cut is a prefix (or suffix) within the budget that
// never starts or ends inside a UTF-8 character; a framed row holds BOS, at least
// one id and EOS within max_length, all in the vocabulary; the padded batch
// is rows x longest with a mask of ones for exactly each row's ids.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "server/text/sentencepiece_tokenizer.h"
#include "server/text/sequences.h"

namespace {

void Check(bool ok) {
  if (!ok) std::abort();
}

bool IsContinuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using kaizen::text::CutText;
  if (size < 5) return 0;
  uint32_t n = 0;
  std::memcpy(&n, data, 4);
  const size_t model_size = std::min<size_t>(n, size - 5);
  const std::string_view model(reinterpret_cast<const char*>(data) + 4, model_size);
  const uint8_t options = data[4 + model_size];
  std::string_view texts(reinterpret_cast<const char*>(data) + 5 + model_size,
                         size - 5 - model_size);
  kaizen::text::TokenizerLimits limits;
  limits.max_model_bytes = int64_t{1} << 20;
  limits.max_text_bytes = 4096;
  auto tokenizer = kaizen::text::SentencePieceTokenizer::Load(model, limits);
  if (!tokenizer.ok()) return 0;
  const int32_t vocab = (*tokenizer)->vocab_size();
  if (vocab < 4) return 0;
  kaizen::text::SequenceOptions sequence;
  sequence.keep_end = (options & 1) != 0;
  sequence.max_length = 3 + (options >> 1);
  sequence.first_id = 1;
  sequence.last_id = 2;
  sequence.pad_id = 3;
  Check(kaizen::text::ValidateSequenceOptions(sequence).ok());
  // A budget smaller than the tokenizer's limit, so that some texts are cut.
  const int64_t max_text_bytes = 64;

  std::vector<std::vector<int32_t>> rows;
  while (!texts.empty() && rows.size() < 64) {
    const size_t eol = std::min(texts.find('\n'), texts.size());
    const std::string_view text = texts.substr(0, eol);
    texts.remove_prefix(std::min(eol + 1, texts.size()));

    const std::string_view cut = CutText(text, max_text_bytes, sequence.keep_end);
    Check(static_cast<int64_t>(cut.size()) <= max_text_bytes || cut.size() == text.size());
    if (sequence.keep_end) {
      Check(cut.data() + cut.size() == text.data() + text.size());
    } else {
      Check(cut.data() == text.data());
    }
    if (cut.size() < text.size()) {
      // Never inside a character: the first byte kept (keeping the end) or
      // dropped (keeping the start) starts one, unless the 3 bytes given up
      // are all continuation bytes (then it is not UTF-8, left for the
      // tokenizer to refuse). At most 3 bytes are given up.
      Check(static_cast<int64_t>(cut.size()) + 3 >= max_text_bytes);
      const size_t given_up = static_cast<size_t>(max_text_bytes) - cut.size();
      const char* boundary = sequence.keep_end ? cut.data() : text.data() + cut.size();
      if (!(sequence.keep_end && cut.empty()) && IsContinuation(*boundary)) {
        Check(given_up == 3);
        const char* first = sequence.keep_end ? boundary - 3 : boundary + 1;
        for (int i = 0; i < 3; ++i) Check(IsContinuation(first[i]));
      }
    }

    auto ids = (*tokenizer)->Encode(cut);
    if (!ids.ok()) continue;  // not UTF-8: Predict refuses it
    std::vector<int32_t> framed = kaizen::text::FrameSequence(*ids, sequence);
    Check(static_cast<int32_t>(framed.size()) <= sequence.max_length);
    Check(framed.size() >= 2 && framed.front() == 1 && framed.back() == 2);
    Check(framed.size() == std::min<size_t>(ids->size() + 2, sequence.max_length));
    for (const int32_t id : framed) Check(id >= 0 && id < vocab);
    rows.push_back(std::move(framed));
  }

  const kaizen::text::PaddedBatch batch = kaizen::text::PadToLongest(rows, sequence.pad_id);
  Check(batch.rows == static_cast<int64_t>(rows.size()));
  size_t longest = 0;
  for (const auto& row : rows) longest = std::max(longest, row.size());
  Check(batch.length == static_cast<int64_t>(longest));
  Check(batch.input_ids.size() == rows.size() * longest);
  Check(batch.attention_mask.size() == batch.input_ids.size());
  for (size_t r = 0; r < rows.size(); ++r) {
    for (size_t t = 0; t < longest; ++t) {
      const size_t i = r * longest + t;
      const bool token = t < rows[r].size();
      Check(batch.attention_mask[i] == (token ? 1 : 0));
      Check(batch.input_ids[i] == (token ? rows[r][t] : sequence.pad_id));
    }
  }
  return 0;
}
