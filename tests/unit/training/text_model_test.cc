#include "server/training/text_model.h"

#include <torch/script.h>

#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/common/sha256.h"
#include "server/models/model_file.h"
#include "server/models/model_metadata.h"
#include "tests/test_util/gloss_text.h"
#include "tests/test_util/temp_dir.h"
#include "tests/test_util/wordnet.h"

namespace kaizen::training {
namespace {

using ::testing::HasSubstr;

// BERT's layout: [PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4.
const char kVocab[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\ncat\n##s\nsat\n";

kaizen::v1::TextInput WordPieceInput() {
  kaizen::v1::TextInput input;
  input.set_tokenizer(kaizen::v1::TOKENIZER_KIND_WORDPIECE);
  input.set_tokenizer_sha256(common::Sha256Hex(kVocab));
  input.set_vocab_size(9);
  input.set_max_length(6);
  input.set_first_id(2);
  input.set_last_id(3);
  input.set_pad_id(0);
  input.set_mask_id(4);
  input.set_pooling(kaizen::v1::TEXT_POOLING_FIRST_TOKEN);
  return input;
}

TEST(TextModelInputTest, WordPieceFramesAndCutsAsTheMetadataSays) {
  absl::StatusOr<TextModelInput> m = TextModelInput::Load(WordPieceInput(), kVocab);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(*m->Encode("The Cats sat"), (std::vector<int32_t>{2, 5, 6, 7, 8, 3}));
  // Cut to max_length 6, framing kept.
  EXPECT_EQ(*m->Encode("the cat the cat the"), (std::vector<int32_t>{2, 5, 6, 5, 6, 3}));
  // BERT's defaults apply where the options are unset; here case is kept.
  kaizen::v1::TextInput cased = WordPieceInput();
  cased.mutable_wordpiece()->set_lower_case(false);
  absl::StatusOr<TextModelInput> c = TextModelInput::Load(cased, kVocab);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(*c->Encode("The cat"), (std::vector<int32_t>{2, 1, 6, 3}));
  kaizen::v1::TextInput keep_end = WordPieceInput();
  keep_end.set_keep_end(true);
  EXPECT_EQ(*TextModelInput::Load(keep_end, kVocab)->Encode("sat the cat the cat"),
            (std::vector<int32_t>{2, 5, 6, 5, 6, 3}));
}

TEST(TextModelInputTest, WhatDisagreesIsNamed) {
  auto error = [](const kaizen::v1::TextInput& input, std::string_view file = kVocab) {
    absl::StatusOr<TextModelInput> m = TextModelInput::Load(input, file);
    EXPECT_FALSE(m.ok());
    return std::string(m.status().message());
  };
  EXPECT_THAT(error(WordPieceInput(), "[UNK]\nother\n"), HasSubstr("the tokenizer file's SHA-256"));
  kaizen::v1::TextInput input = WordPieceInput();
  input.set_vocab_size(10);
  EXPECT_THAT(error(input), HasSubstr("the tokenizer has 9 ids but text_input.vocab_size is 10"));
  input = WordPieceInput();
  input.set_first_id(9);
  EXPECT_THAT(error(input), HasSubstr("text_input.first_id is 9; it must be in [-1, 9)"));
  input = WordPieceInput();
  input.set_pad_id(-1);
  EXPECT_THAT(error(input), HasSubstr("text_input.pad_id is -1"));
  input = WordPieceInput();
  input.clear_tokenizer();
  EXPECT_THAT(error(input), HasSubstr("text_input.tokenizer must be"));
  input = WordPieceInput();
  input.set_tokenizer_sha256("ABC");
  EXPECT_THAT(error(input), HasSubstr("64 lower-case hex digits"));
  input = WordPieceInput();
  input.set_max_length(2);
  EXPECT_THAT(error(input), HasSubstr("text_input: "));
  input = WordPieceInput();
  input.clear_pooling();
  EXPECT_THAT(error(input), HasSubstr("text_input.pooling"));
  TextModelLimits tiny;
  tiny.max_tokenizer_bytes = 10;
  EXPECT_EQ(TextModelInput::Load(WordPieceInput(), kVocab, tiny).status().code(),
            absl::StatusCode::kResourceExhausted);
}

// A transformer-small with a SentencePiece tokenizer trained on glosses,
// saved as a model file with the tokenizer inside, read back: the same ids,
// the same module.
TEST(TextModelInputTest, AModelFileCarriesItsTokenizer) {
  std::vector<std::string> glosses;
  for (const test_util::WordNetGloss& g : test_util::WordNetGlosses()) {
    if (glosses.size() == 3000) break;
    glosses.push_back(g.gloss);
  }
  ASSERT_EQ(glosses.size(), 3000u) << "wordnet-base is not installed";
  test_util::TempDir dir;
  ASSERT_TRUE(test_util::GlossSentencePiece(dir, glosses, 500).ok());
  std::ifstream in(dir.File("gloss_spm.model"), std::ios::binary);
  const std::string spm((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());

  kaizen::v1::TextInput input;
  input.set_tokenizer(kaizen::v1::TOKENIZER_KIND_SENTENCEPIECE);
  input.set_tokenizer_sha256(common::Sha256Hex(spm));
  input.set_first_id(test_util::kGlossBos);
  input.set_last_id(test_util::kGlossEos);
  input.set_pad_id(test_util::kGlossPad);
  input.set_mask_id(test_util::kGlossMask);
  models::TextEncoderOptions options;
  options.vocab_size = 500;
  options.max_length = 32;
  options.hidden_size = 16;
  options.num_heads = 2;
  options.intermediate_size = 32;
  options.num_classes = 3;
  options.pooling = models::TextPooling::kMaskedMean;
  absl::StatusOr<kaizen::v1::Model> metadata = DescribeTextEncoder(options, input);
  ASSERT_TRUE(metadata.ok()) << metadata.status();
  EXPECT_EQ(metadata->text_input().max_length(), 32);
  EXPECT_EQ(metadata->text_input().pooling(), kaizen::v1::TEXT_POOLING_MASKED_MEAN);
  EXPECT_EQ(metadata->parameter_count(), models::TextEncoderParameterCount(options));
  auto module = models::CreateTextEncoder(options);
  ASSERT_TRUE(module.ok());
  const std::string path = dir.File("model.pt");
  ASSERT_TRUE(models::SaveModelFile(*module, *metadata, path, spm).ok());

  absl::StatusOr<kaizen::v1::Model> read = models::ReadModelMetadata(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->text_input().tokenizer_sha256(), input.tokenizer_sha256());
  absl::StatusOr<std::string> carried = models::ReadModelTokenizer(path, 1 << 20);
  ASSERT_TRUE(carried.ok()) << carried.status();
  EXPECT_EQ(*carried, spm);
  absl::StatusOr<TextModelInput> loaded = TextModelInput::Load(read->text_input(), *carried);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  for (size_t i = 0; i < 200; ++i) {
    absl::StatusOr<std::vector<int32_t>> direct = loaded->tokenizer().Encode(glosses[i]);
    ASSERT_TRUE(direct.ok());
    std::vector<int32_t> framed = {test_util::kGlossBos};
    framed.insert(framed.end(), direct->begin(),
                  direct->begin() + std::min<size_t>(direct->size(), 30));
    framed.push_back(test_util::kGlossEos);
    EXPECT_EQ(*loaded->Encode(glosses[i]), framed) << glosses[i];
  }
  EXPECT_EQ(models::ReadModelTokenizer(path, 100).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(models::TextEncoderOptionsOf(torch::jit::load(path)).ok());

  // Text models need their tokenizer, and only text models take one.
  EXPECT_THAT(models::SaveModelFile(*module, *metadata, dir.File("bare.pt")).message(),
              HasSubstr("needs its tokenizer file"));
  EXPECT_THAT(
      models::SaveModelFile(*module, *metadata, dir.File("other.pt"), "other bytes").message(),
      HasSubstr("SHA-256"));
  kaizen::v1::Model image = *metadata;
  image.clear_text_input();
  EXPECT_THAT(models::SaveModelFile(*module, image, dir.File("image.pt"), spm).message(),
              HasSubstr("not a text model"));
  ASSERT_TRUE(models::SaveModelFile(*module, image, dir.File("image.pt")).ok());
  EXPECT_EQ(models::ReadModelTokenizer(dir.File("image.pt"), 1 << 20).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(models::ReadModelTokenizer(dir.File("missing.pt"), 1 << 20).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(TextModelInputTest, PoolingConvertsBothWays) {
  for (models::TextPooling p :
       {models::TextPooling::kFirstToken, models::TextPooling::kMaskedMean}) {
    EXPECT_EQ(FromProto(ToProto(p)), p);
  }
  EXPECT_EQ(ToProto(models::TextPooling::kFirstToken), kaizen::v1::TEXT_POOLING_FIRST_TOKEN);
}

}  // namespace
}  // namespace kaizen::training
