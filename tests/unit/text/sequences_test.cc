// Framing, padding to the longest row, and length-bucketed batch orders, on
// hand-made ids and on WordNet glosses through the WordPiece tokenizer.
#include "server/text/sequences.h"

#include <algorithm>
#include <iostream>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/text/wordpiece_tokenizer.h"
#include "tests/test_util/wordnet.h"

namespace kaizen::text {
namespace {

using ::testing::ElementsAre;

TEST(SequencesTest, FramesCutsAndPadsToTheLongestRow) {
  SequenceOptions o;
  o.max_length = 5;
  o.first_id = 101;
  o.last_id = 102;
  EXPECT_THAT(FrameSequence({7, 8}, o), ElementsAre(101, 7, 8, 102));
  EXPECT_THAT(FrameSequence({1, 2, 3, 4, 5}, o), ElementsAre(101, 1, 2, 3, 102));
  o.keep_end = true;
  EXPECT_THAT(FrameSequence({1, 2, 3, 4, 5}, o), ElementsAre(101, 3, 4, 5, 102));
  EXPECT_THAT(FrameSequence({}, o), ElementsAre(101, 102));
  SequenceOptions plain;
  plain.max_length = 2;
  EXPECT_THAT(FrameSequence({1, 2, 3}, plain), ElementsAre(1, 2));

  EXPECT_TRUE(ValidateSequenceOptions(o).ok());
  o.max_length = 2;
  EXPECT_EQ(ValidateSequenceOptions(o).code(), absl::StatusCode::kInvalidArgument);
  plain.pad_id = -1;
  EXPECT_EQ(ValidateSequenceOptions(plain).code(), absl::StatusCode::kInvalidArgument);

  const PaddedBatch b = PadToLongest({{5, 6, 7}, {8}, {9, 10}}, 0);
  EXPECT_EQ(b.rows, 3);
  EXPECT_EQ(b.length, 3);
  EXPECT_THAT(b.input_ids, ElementsAre(5, 6, 7, 8, 0, 0, 9, 10, 0));
  EXPECT_THAT(b.attention_mask, ElementsAre(1, 1, 1, 1, 0, 0, 1, 1, 0));
  const PaddedBatch empty = PadToLongest({}, 0);
  EXPECT_EQ(empty.rows, 0);
  EXPECT_TRUE(empty.input_ids.empty());
}

TEST(SequencesTest, BucketedOrdersArePermutationsFixedByTheirSeed) {
  std::vector<int32_t> lengths(1000);
  for (size_t i = 0; i < lengths.size(); ++i) lengths[i] = static_cast<int32_t>(3 + i * 7919 % 97);
  const std::vector<int64_t> a = LengthBucketedOrder(lengths, 16, 42);
  EXPECT_EQ(a, LengthBucketedOrder(lengths, 16, 42));
  EXPECT_NE(a, LengthBucketedOrder(lengths, 16, 43));
  std::vector<int64_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> all(lengths.size());
  std::iota(all.begin(), all.end(), 0);
  EXPECT_EQ(sorted, all);
  // The first batch of an epoch is not always the shortest texts.
  std::map<int64_t, int> first_batch_max;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const std::vector<int64_t> o = LengthBucketedOrder(lengths, 16, seed);
    int32_t longest = 0;
    for (int i = 0; i < 16; ++i) longest = std::max(longest, lengths[static_cast<size_t>(o[i])]);
    ++first_batch_max[longest];
  }
  EXPECT_GT(first_batch_max.size(), 5u);
}

// WordNet glosses through a WordPiece vocabulary of their commonest words:
// bucketed batches of 32 hold far less padding than shuffled ones.
TEST(SequencesTest, BucketingCutsThePaddingOfRealTexts) {
  const std::vector<test_util::WordNetGloss> glosses = test_util::WordNetGlosses();
  ASSERT_GT(glosses.size(), 20000u) << "wordnet-base is not installed";
  std::map<std::string, int> counts;
  for (size_t i = 0; i < 20000; ++i) {
    for (char c : glosses[i].gloss) ++counts[std::string(1, c)];
  }
  std::string vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n";
  for (const auto& [c, n] : counts) absl::StrAppend(&vocab, c, "\n##", c, "\n");
  auto tokenizer = WordPieceTokenizer::Create(vocab, {});
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  SequenceOptions o;
  o.max_length = 128;
  o.first_id = 2;
  o.last_id = 3;
  std::vector<int32_t> lengths;
  for (size_t i = 0; i < 20000; ++i) {
    auto ids = (*tokenizer)->Encode(glosses[i].gloss);
    ASSERT_TRUE(ids.ok());
    lengths.push_back(static_cast<int32_t>(FrameSequence(*ids, o).size()));
  }
  const double shuffled = PaddingShare(lengths, LengthBucketedOrder(lengths, 32, 7, 1), 32);
  const double bucketed = PaddingShare(lengths, LengthBucketedOrder(lengths, 32, 7), 32);
  std::cout << "padding share, batches of 32: shuffled " << shuffled << ", bucketed " << bucketed
            << "\n";
  EXPECT_GT(shuffled, 0.3);
  EXPECT_LT(bucketed, shuffled / 4);
}

TEST(CutTextTest, CutsAtACharacterBoundaryKeepingTheStartOrTheEnd) {
  const std::string text =
      "ab\xc3\xa9"
      "cd";  // "abécd": é is two bytes
  EXPECT_EQ(CutText(text, 10, false), text);
  EXPECT_EQ(CutText(text, 4, false), "ab\xc3\xa9");
  EXPECT_EQ(CutText(text, 3, false), "ab");  // never half of é
  EXPECT_EQ(CutText(text, 3, true), "cd");   // é would need 4 bytes
  EXPECT_EQ(CutText(text, 4, true),
            "\xc3\xa9"
            "cd");
  EXPECT_EQ(CutText(text, 0, false), "");
  EXPECT_EQ(CutText(text, -1, true), text);
  // Not UTF-8: a run of continuation bytes is not skipped past, so the
  // tokenizer still sees (and refuses) what is left of it.
  const std::string invalid = "a" + std::string(8, '\x80');
  EXPECT_EQ(CutText(invalid, 6, false), "a\x80\x80");
  EXPECT_EQ(CutText(invalid, 6, true), "\x80\x80\x80");
}

}  // namespace
}  // namespace kaizen::text
