// The WordPiece tokenizer: a vocabulary from an uploaded model and any text.
// Input: a 2-byte little-endian length n, n bytes of vocab.txt (an unknown
// token is added when it has none, so that most inputs get past Create), one
// byte of options, then the text.
#include <cstdint>
#include <string>

#include "fuzz/fuzz_util.h"
#include "server/text/wordpiece_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  const size_t n = std::min<size_t>(data[0] | data[1] << 8, size - 3);
  std::string vocab(reinterpret_cast<const char*>(data + 2), n);
  if (vocab.find("[UNK]") == std::string::npos) vocab += "\n[UNK]\n";
  const uint8_t flags = data[2 + n];
  const std::string text(reinterpret_cast<const char*>(data + 3 + n), size - 3 - n);
  kaizen::text::WordPieceOptions options;
  options.lowercase = (flags & 1) != 0;
  if ((flags & 2) != 0) options.strip_accents = (flags & 4) != 0;
  options.clean_text = (flags & 8) != 0;
  options.handle_chinese_chars = (flags & 16) != 0;
  options.max_input_chars_per_word = 1 + (flags >> 5) * 4;
  kaizen::text::WordPieceLimits limits;
  limits.max_tokens = 4096;
  auto tokenizer = kaizen::text::WordPieceTokenizer::Create(vocab, options, limits);
  if (!tokenizer.ok()) return 0;
  const auto encoded = (*tokenizer)->Encode(text);
  if (!encoded.ok()) return 0;
  const std::vector<int32_t>& ids = *encoded;
  for (const int32_t id : ids) {
    kaizen::fuzz::Check(id >= 0 && id < (*tokenizer)->vocab_size());
  }
  kaizen::fuzz::Check((*tokenizer)->Tokenize(text).size() == ids.size());
  return 0;
}
