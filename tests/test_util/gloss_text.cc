#include "tests/test_util/gloss_text.h"

#include <fstream>
#include <iterator>

#include "absl/strings/str_cat.h"

namespace kaizen::test_util {

absl::StatusOr<std::unique_ptr<text::SentencePieceTokenizer>> GlossSentencePiece(
    const TempDir& dir, const std::vector<std::string>& texts, int vocab_size) {
  const std::string corpus = dir.File("gloss_corpus.txt");
  {
    std::ofstream out(corpus, std::ios::binary);
    for (const std::string& t : texts) out << t << "\n";
  }
  const absl::Status trained = text::TrainSentencePieceModel(absl::StrCat(
      "--input=", corpus, " --model_prefix=", dir.File("gloss_spm"), " --vocab_size=", vocab_size,
      " --model_type=unigram --character_coverage=1.0 --pad_id=", kGlossPad,
      " --user_defined_symbols=[MASK] --minloglevel=2 --num_threads=2"));
  if (!trained.ok()) return trained;
  std::ifstream in(dir.File("gloss_spm.model"), std::ios::binary);
  const std::string model((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text::SentencePieceTokenizer::Load(model);
}

absl::StatusOr<std::vector<std::vector<int32_t>>> FrameTexts(const text::Tokenizer& tokenizer,
                                                             const std::vector<std::string>& texts,
                                                             int32_t max_length) {
  text::SequenceOptions framing;
  framing.max_length = max_length;
  framing.first_id = kGlossBos;
  framing.last_id = kGlossEos;
  framing.pad_id = kGlossPad;
  std::vector<std::vector<int32_t>> sequences;
  sequences.reserve(texts.size());
  for (const std::string& t : texts) {
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(t);
    if (!ids.ok()) return ids.status();
    sequences.push_back(text::FrameSequence(*ids, framing));
  }
  return sequences;
}

}  // namespace kaizen::test_util
