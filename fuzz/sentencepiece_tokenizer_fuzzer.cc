// The SentencePiece tokenizer on hostile bytes: a model and a text, both as a
// client could send them. The input is a 4-byte little-endian length N, N
// bytes of serialized model, then the text (the seeds are a small valid model
// with texts, so mutations reach both the model parser and the encoder).
// Loading must refuse or succeed without crashing; a loaded model must
// encode any text, or refuse it (invalid UTF-8, over the limit), with ids in
// its vocabulary.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "server/text/sentencepiece_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  uint32_t n = 0;
  std::memcpy(&n, data, 4);
  const size_t model_size = std::min<size_t>(n, size - 4);
  const std::string_view model(reinterpret_cast<const char*>(data) + 4, model_size);
  const std::string_view text(reinterpret_cast<const char*>(data) + 4 + model_size,
                              size - 4 - model_size);
  kaizen::text::TokenizerLimits limits;
  limits.max_model_bytes = int64_t{1} << 20;
  limits.max_text_bytes = 4096;
  auto tokenizer = kaizen::text::SentencePieceTokenizer::Load(model, limits);
  if (!tokenizer.ok()) return 0;
  auto ids = (*tokenizer)->Encode(text);
  if (!ids.ok()) return 0;
  for (const int32_t id : *ids) {
    if (id < 0 || id >= (*tokenizer)->vocab_size()) std::abort();
  }
  return 0;
}
