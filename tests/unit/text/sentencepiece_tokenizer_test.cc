#include "server/text/sentencepiece_tokenizer.h"

#include <atomic>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kaizen/internal/sentencepiece_model.pb.h"
#include "tests/test_util/python.h"
#include "tests/test_util/temp_dir.h"
#include "tests/test_util/wordnet.h"

namespace kaizen::text {
namespace {

using ::testing::HasSubstr;

// WordNet's glosses (Debian's wordnet-base), without their categories.
std::vector<std::string> WordNetGlosses() {
  std::vector<std::string> glosses;
  for (test_util::WordNetGloss& g : test_util::WordNetGlosses())
    glosses.push_back(std::move(g.gloss));
  return glosses;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A unigram model of 2,000 pieces trained on the first 20,000 glosses, once
// for the suite.
class SentencePieceTokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test_util::TempDir();
    glosses_ = new std::vector<std::string>(WordNetGlosses());
    ASSERT_GT(glosses_->size(), 100000u) << "wordnet-base is not installed";
    const std::string corpus = dir_->File("train.txt");
    {
      std::ofstream out(corpus, std::ios::binary);
      for (size_t i = 0; i < 20000; ++i) out << (*glosses_)[i] << "\n";
    }
    const absl::Status trained = TrainSentencePieceModel(
        absl::StrCat("--input=", corpus, " --model_prefix=", dir_->File("m"),
                     " --vocab_size=2000 --model_type=unigram --character_coverage=1.0"
                     " --pad_id=3 --minloglevel=2 --num_threads=2"));
    ASSERT_TRUE(trained.ok()) << trained;
    model_ = new std::string(ReadFile(dir_->File("m.model")));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete glosses_;
    delete dir_;
  }

  static test_util::TempDir* dir_;
  static std::vector<std::string>* glosses_;
  static std::string* model_;
};

test_util::TempDir* SentencePieceTokenizerTest::dir_ = nullptr;
std::vector<std::string>* SentencePieceTokenizerTest::glosses_ = nullptr;
std::string* SentencePieceTokenizerTest::model_ = nullptr;

// Token for token what Python's sentencepiece gives, on 12,000 glosses the
// model was not trained on and on texts that stress the normaliser (NFKC,
// accents, full-width forms, runs of spaces, scripts the model never saw).
TEST_F(SentencePieceTokenizerTest, EncodesAsThePythonReferenceDoes) {
  auto tokenizer = SentencePieceTokenizer::Load(*model_);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  std::vector<std::string> texts(glosses_->begin() + 20000, glosses_->begin() + 32000);
  for (const char* hard : {"", " ", "   leading and   inner   spaces  ", "Caf\xC3\xA9 na\xC3\xAFve",
                           "\xEF\xBC\xA1\xEF\xBC\xA2\xEF\xBC\xA3 full-width",
                           "\xE2\x85\xA0 roman numeral one, \xEF\xAC\x81 ligature",
                           "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E and \xD0\xA0\xD1\x83\xD1\x81",
                           "emoji \xF0\x9F\x99\x82 and tab\tinside", "UPPER lower MiXeD 12345"}) {
    texts.emplace_back(hard);
  }
  const std::string corpus = dir_->File("parity.txt");
  {
    std::ofstream out(corpus, std::ios::binary);
    for (const std::string& t : texts) out << t << "\n";
  }
  const std::string reference = dir_->File("reference.txt");
  ASSERT_TRUE(
      test_util::RunPythonFixture("spm_reference.py", {dir_->File("m.model"), corpus, reference})
          .ok());
  const std::vector<std::string> lines = absl::StrSplit(ReadFile(reference), '\n');
  ASSERT_EQ(lines.size(), texts.size() + 2);  // the header, and the empty string after the last
  EXPECT_EQ(lines[0], absl::StrCat((*tokenizer)->vocab_size(), " ", (*tokenizer)->unk_id(), " ",
                                   (*tokenizer)->bos_id(), " ", (*tokenizer)->eos_id(), " ",
                                   (*tokenizer)->pad_id()));
  size_t mismatches = 0;
  size_t tokens = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    auto ids = (*tokenizer)->Encode(texts[i]);
    ASSERT_TRUE(ids.ok()) << ids.status() << " for text " << i;
    std::vector<int32_t> expected;
    for (absl::string_view field : absl::StrSplit(lines[i + 1], ' ', absl::SkipEmpty())) {
      int32_t id = 0;
      ASSERT_TRUE(absl::SimpleAtoi(field, &id)) << lines[i + 1];
      expected.push_back(id);
    }
    tokens += ids->size();
    if (*ids != expected && ++mismatches <= 5) {
      ADD_FAILURE() << "text " << i << " '" << texts[i] << "': " << ids->size() << " ids here, "
                    << expected.size() << " in Python";
    }
  }
  EXPECT_EQ(mismatches, 0u);
  EXPECT_GT(tokens, texts.size() * 5) << "the glosses should take several pieces each";
}

// Four threads encoding the same glosses at once get what one thread gets
// (the library runs in a namespace of its own; calls into it take turns).
TEST_F(SentencePieceTokenizerTest, ThreadsEncodingAtOnceAgreeWithOneThread) {
  auto tokenizer = SentencePieceTokenizer::Load(*model_);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  std::vector<std::vector<int32_t>> expected;
  for (size_t i = 40000; i < 41000; ++i) {
    auto ids = (*tokenizer)->Encode((*glosses_)[i]);
    ASSERT_TRUE(ids.ok()) << ids.status();
    expected.push_back(*ids);
  }
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      auto own = SentencePieceTokenizer::Load(*model_);  // loads and frees race too
      if (!own.ok()) {
        ++wrong;
        return;
      }
      for (size_t i = 0; i < expected.size(); ++i) {
        const SentencePieceTokenizer& which = (i % 2 == 0) ? **tokenizer : **own;
        auto ids = which.Encode((*glosses_)[40000 + i]);
        if (!ids.ok() || *ids != expected[i]) ++wrong;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
}

TEST_F(SentencePieceTokenizerTest, DescribesTheModel) {
  auto tokenizer = SentencePieceTokenizer::Load(*model_);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->vocab_size(), 2000);
  EXPECT_EQ((*tokenizer)->unk_id(), 0);
  EXPECT_EQ((*tokenizer)->bos_id(), 1);
  EXPECT_EQ((*tokenizer)->eos_id(), 2);
  EXPECT_EQ((*tokenizer)->pad_id(), 3);
  EXPECT_EQ((*tokenizer)->Piece(0), "<unk>");
  EXPECT_EQ((*tokenizer)->Piece(2000), "");
  EXPECT_EQ((*tokenizer)->Piece(-1), "");
  // A word in the training glosses splits into pieces that spell it.
  auto ids = (*tokenizer)->Encode("an animal");
  ASSERT_TRUE(ids.ok()) << ids.status();
  std::string spelled;
  for (int32_t id : *ids) spelled += (*tokenizer)->Piece(id);
  EXPECT_EQ(spelled,
            "\xE2\x96\x81"
            "an"
            "\xE2\x96\x81"
            "animal");  // U+2581 marks a space
}

TEST_F(SentencePieceTokenizerTest, RefusesTextThatIsNotUtf8OrTooLong) {
  TokenizerLimits limits;
  limits.max_text_bytes = 64;
  auto tokenizer = SentencePieceTokenizer::Load(*model_, limits);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  for (const auto& [text, offset] :
       std::vector<std::pair<std::string, int>>{{"ab\xFF"
                                                 "cd",
                                                 2},  // a byte that never occurs in UTF-8
                                                {"abc\xC3", 3},        // a sequence cut at the end
                                                {"\xC0\xAF", 0},       // an overlong '/'
                                                {"x\xED\xA0\x80", 1},  // a UTF-16 surrogate
                                                {"ok \xF4\x90\x80\x80", 3}}) {  // above U+10FFFF
    auto ids = (*tokenizer)->Encode(text);
    ASSERT_FALSE(ids.ok()) << "byte " << offset;
    EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(ids.status().message()),
                HasSubstr(absl::StrCat("not valid UTF-8 at byte ", offset, " ")));
  }
  auto long_text = (*tokenizer)->Encode(std::string(65, 'a'));
  ASSERT_FALSE(long_text.ok());
  EXPECT_THAT(std::string(long_text.status().message()),
              HasSubstr("65 bytes, over the limit of 64"));
  EXPECT_TRUE((*tokenizer)->Encode(std::string(64, 'a')).ok());
}

TEST_F(SentencePieceTokenizerTest, BadTrainingFlagsAreAnError) {
  const absl::Status trained = TrainSentencePieceModel("--input=/nonexistent --model_prefix=x");
  EXPECT_EQ(trained.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(trained.message()), HasSubstr("SentencePiece training: "));
}

// The library reads a model's character map unchecked (a mutated map made it
// read out of bounds): a map SentencePiece does not build itself is refused
// before the library sees it; the maps it builds load.
TEST_F(SentencePieceTokenizerTest, RefusesACharacterMapSentencePieceDoesNotBuild) {
  kaizen::internal::SentencePieceModelNormalizers parsed;
  ASSERT_TRUE(parsed.ParseFromString(*model_));
  const std::string& map = parsed.normalizer_spec().precompiled_charsmap();
  ASSERT_GT(map.size(), 1000u) << "the default rule (nmt_nfkc) carries a map";
  const size_t at = model_->find(map);
  ASSERT_NE(at, std::string::npos);
  std::string mutated = *model_;
  mutated[at + map.size() / 2] ^= 0x55;  // same length: still a well-formed ModelProto
  auto refused = SentencePieceTokenizer::Load(mutated);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("normalizer (rule 'nmt_nfkc') carries a character map of"));
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("custom maps are refused"));
  for (const char* rule : {"nfkc", "identity", "nmt_nfkc_cf"}) {
    const std::string prefix = dir_->File(rule);
    ASSERT_TRUE(TrainSentencePieceModel(
                    absl::StrCat("--input=", dir_->File("train.txt"), " --model_prefix=", prefix,
                                 " --vocab_size=500 --normalization_rule_name=", rule,
                                 " --input_sentence_size=2000 --minloglevel=2"))
                    .ok());
    EXPECT_TRUE(SentencePieceTokenizer::Load(ReadFile(prefix + ".model")).ok()) << rule;
  }
}

TEST_F(SentencePieceTokenizerTest, RefusesBytesThatAreNotAModel) {
  for (const std::string& bytes :
       {std::string(), std::string("not a model"), std::string(4096, '\xFF'),
        model_->substr(0, model_->size() / 2)}) {
    auto tokenizer = SentencePieceTokenizer::Load(bytes);
    ASSERT_FALSE(tokenizer.ok()) << bytes.size() << " bytes";
    EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(tokenizer.status().message()), HasSubstr("SentencePiece model"));
  }
  TokenizerLimits limits;
  limits.max_model_bytes = 1024;
  auto over = SentencePieceTokenizer::Load(*model_, limits);
  ASSERT_FALSE(over.ok());
  EXPECT_THAT(std::string(over.status().message()), HasSubstr("over the limit of 1024"));
}

}  // namespace
}  // namespace kaizen::text
