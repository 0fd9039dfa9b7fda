// WordPieceTokenizer against Hugging Face's tokenizers (its Rust core through
// the Node binding, installed by scripts/setup.sh under
// tests/fixtures/wordpiece_reference): token for token on 12,000 WordNet
// glosses and on texts that stress each normalisation step, under five
// configurations of BERT's options.
#include "server/text/wordpiece_tokenizer.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util/image_fixtures.h"
#include "tests/test_util/python.h"
#include "tests/test_util/temp_dir.h"
#include "tests/test_util/wordnet.h"

namespace kaizen::text {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A JSON string literal of UTF-8 text.
std::string JsonString(absl::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20) {
      out += absl::StrFormat("\\u%04x", u);
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// A vocabulary made from the glosses: the special tokens, every character
// seen (alone and as a continuation), the 3,000 commonest lower-case ASCII
// words, some cased and accented words, and the 1,500 commonest word
// endings of 2 to 4 letters as continuations. The words of each text then
// split into pieces in many ways, and some have no pieces at all.
std::string MakeVocab(const std::vector<test_util::WordNetGloss>& glosses) {
  std::vector<std::string> vocab = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  std::map<std::string, int> words;
  std::map<std::string, int> endings;
  std::map<std::string, int> chars;
  for (size_t g = 0; g < 20000 && g < glosses.size(); ++g) {
    const std::string& text = glosses[g].gloss;
    for (size_t i = 0; i < text.size();) {
      const size_t len = (static_cast<unsigned char>(text[i]) >= 0xF0)   ? 4
                         : (static_cast<unsigned char>(text[i]) >= 0xE0) ? 3
                         : (static_cast<unsigned char>(text[i]) >= 0xC0) ? 2
                                                                         : 1;
      ++chars[absl::AsciiStrToLower(text.substr(i, len))];
      i += len;
    }
    for (absl::string_view w :
         absl::StrSplit(text, absl::ByAnyChar(" ,;:.()'\"-!?`"), absl::SkipEmpty())) {
      const std::string lower = absl::AsciiStrToLower(w);
      ++words[lower];
      for (size_t n = 2; n <= 4 && n < lower.size(); ++n) ++endings[lower.substr(lower.size() - n)];
    }
  }
  for (const auto& [c, n] : chars) {
    vocab.push_back(c);
    vocab.push_back("##" + c);
  }
  const auto top = [](const std::map<std::string, int>& counts, size_t k) {
    std::vector<std::pair<int, std::string>> v;
    for (const auto& [s, n] : counts) v.emplace_back(-n, s);
    std::sort(v.begin(), v.end());
    std::vector<std::string> out;
    for (size_t i = 0; i < v.size() && i < k; ++i) out.push_back(v[i].second);
    return out;
  };
  for (const std::string& w : top(words, 3000)) vocab.push_back(w);
  for (const std::string& e : top(endings, 1500)) vocab.push_back("##" + e);
  for (const char* w : {"The", "Caf\xC3\xA9", "caf\xC3\xA9", "cafe", "istanbul", "\xC4\xB0stanbul",
                        "i\xCC\x87stanbul", "\xE6\x97\xA5", "the"}) {
    vocab.emplace_back(w);  // "the" twice: the later id wins
  }
  std::string out;
  for (const std::string& token : vocab) absl::StrAppend(&out, token, "\n");
  return out;
}

class WordPieceTokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    glosses_ = new std::vector<test_util::WordNetGloss>(test_util::WordNetGlosses());
    vocab_ = new std::string(MakeVocab(*glosses_));
  }
  static void TearDownTestSuite() {
    delete glosses_;
    delete vocab_;
  }

  static std::vector<test_util::WordNetGloss>* glosses_;
  static std::string* vocab_;
  test_util::TempDir dir_;
};

std::vector<test_util::WordNetGloss>* WordPieceTokenizerTest::glosses_ = nullptr;
std::string* WordPieceTokenizerTest::vocab_ = nullptr;

struct Config {
  const char* name;
  WordPieceOptions options;
};

std::string OptionsJson(const WordPieceOptions& o) {
  return absl::StrCat("{\"lowercase\": ", o.lowercase ? "true" : "false", ", \"strip_accents\": ",
                      o.strip_accents.has_value() ? (*o.strip_accents ? "true" : "false") : "null",
                      ", \"clean_text\": ", o.clean_text ? "true" : "false",
                      ", \"handle_chinese_chars\": ", o.handle_chinese_chars ? "true" : "false",
                      ", \"max_input_chars_per_word\": ", o.max_input_chars_per_word, "}");
}

TEST_F(WordPieceTokenizerTest, EncodesAsHuggingFaceTokenizersDoes) {
  ASSERT_GT(glosses_->size(), 100000u) << "wordnet-base is not installed";
  std::vector<std::string> texts;
  for (size_t i = 20000; i < 32000; ++i) texts.push_back((*glosses_)[i].gloss);
  for (const char* hard :
       {"",
        " ",
        "   leading and   inner   spaces  ",
        "Caf\xC3\xA9 na\xC3\xAFve \xC3\x85ngstr\xC3\xB6m",
        "cafe\xCC\x81 (a combining accent)",
        "\xC4\xB0stanbul and ISTANBUL",
        "\xCE\xA3\xCE\x8A\xCE\xA3\xCE\xA5\xCE\xA6\xCE\x9F\xCE\xA3 final sigma",
        "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xAE\xE3\x81\x8B\xE3\x81\xAA mixed CJK kana",
        "ctrl\x01\x1f chars",
        "zero\xE2\x80\x8Bwidth and \xEF\xBB\xBF bom",
        "tab\there\nnewline\r\ncr",
        "nbsp\xC2\xA0"
        "and\xE2\x80\x83"
        "em space\xE3\x80\x80ideographic",
        "emoji \xF0\x9F\x99\x82\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD",
        "\xEF\xBC\xA1\xEF\xBC\xA2 full-width",
        "\xEF\xAC\x81 ligature \xE2\x85\xA0 numeral",
        "\xC2\xBF\xC2\xA1 \xC2\xAB guillemets \xC2\xBB",
        "dash\xE2\x80\x94"
        "and\xE2\x80\x93"
        "en \xE2\x80\xA6 ellipsis",
        "math \xE2\x89\xA4 \xE2\x88\x91 +=<>^`|~$",
        "private \xEE\x80\x80 use and unassigned \xCD\xB8 \xEF\xBF\xBE \xF4\x8F\xBF\xBF",
        "tag \xF3\xA0\x80\x81 language tag, \xF3\xA0\x80\x80 unassigned",
        "replacement \xEF\xBF\xBD char",
        "\xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4 Hangul",
        "\xD8\xA7\xD9\x84\xD8\xB9\xD8\xB1\xD8\xA8\xD9\x8A\xD8\xA9 Arabic",
        "\xE0\xA4\xB9\xE0\xA4\xBF\xE0\xA4\x82\xE0\xA4\xA6\xE0\xA5\x80 Devanagari",
        "a\xCC\x81\xCC\xA3 stacked marks o\xCC\xA3\xCC\x81",
        "snake_case and kebab-case and dots.in.words",
        "supercalifragilisticexpialidocious",
        "x"
        "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
        "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy long word",
        "UPPER lower MiXeD 12345 3.14 1,000"}) {
    texts.emplace_back(hard);
  }
  const std::string vocab_path = dir_.File("vocab.txt");
  const std::string texts_path = dir_.File("texts.jsonl");
  test_util::WriteBinaryFile(vocab_path, *vocab_);
  {
    std::string jsonl;
    for (const std::string& t : texts) absl::StrAppend(&jsonl, JsonString(t), "\n");
    test_util::WriteBinaryFile(texts_path, jsonl);
  }
  WordPieceOptions cased;
  cased.lowercase = false;
  WordPieceOptions keep_accents;
  keep_accents.strip_accents = false;
  WordPieceOptions raw;
  raw.clean_text = false;
  raw.handle_chinese_chars = false;
  raw.lowercase = false;
  raw.strip_accents = true;
  WordPieceOptions short_words;
  short_words.max_input_chars_per_word = 6;
  const std::vector<Config> configs = {{"bert-base-uncased", {}},
                                       {"cased", cased},
                                       {"lowercase, accents kept", keep_accents},
                                       {"no cleaning, no CJK split, accents stripped", raw},
                                       {"words of at most 6 characters", short_words}};
  for (const Config& config : configs) {
    SCOPED_TRACE(config.name);
    auto tokenizer = WordPieceTokenizer::Create(*vocab_, config.options);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    absl::StatusOr<std::string> reference =
        test_util::RunProgram({"node", test_util::FixturePath("wordpiece_reference/encode.js"),
                               vocab_path, OptionsJson(config.options), texts_path});
    ASSERT_TRUE(reference.ok()) << reference.status()
                                << "\n(the reference is installed by scripts/setup.sh)";
    const std::vector<std::string> lines =
        absl::StrSplit(absl::StripSuffix(*reference, "\n"), '\n');
    ASSERT_EQ(lines.size(), texts.size());
    size_t mismatches = 0;
    size_t tokens = 0;
    size_t unknown = 0;
    for (size_t i = 0; i < texts.size(); ++i) {
      absl::StatusOr<std::vector<int32_t>> encoded = (*tokenizer)->Encode(texts[i]);
      ASSERT_TRUE(encoded.ok()) << encoded.status();
      const std::vector<int32_t>& ids = *encoded;
      const std::string got = absl::StrCat("[", absl::StrJoin(ids, ","), "]");
      tokens += ids.size();
      unknown += std::count(ids.begin(), ids.end(), (*tokenizer)->unk_id());
      if (got != lines[i] && ++mismatches <= 5) {
        ADD_FAILURE() << "text " << i << " \"" << texts[i] << "\"\n  ours:      " << got
                      << "\n  reference: " << lines[i]
                      << "\n  pieces: " << absl::StrJoin((*tokenizer)->Tokenize(texts[i]), " ");
      }
    }
    EXPECT_EQ(mismatches, 0u) << "of " << texts.size() << " texts";
    // The corpus exercises the algorithm: many tokens, some unknown.
    EXPECT_GT(tokens, 150'000u);
    EXPECT_GT(unknown, 20u);
  }
}

// A handled code point sequence from the probe's notation: "=" the code
// point itself, "-" nothing, else hex code points joined by "+".
std::u32string ParseSequence(absl::string_view s, char32_t self) {
  if (s == "=") return std::u32string(1, self);
  std::u32string out;
  if (s == "-") return out;
  for (absl::string_view part : absl::StrSplit(s, '+')) {
    uint32_t v = 0;
    EXPECT_TRUE(absl::SimpleHexAtoi(part, &v)) << s;
    out.push_back(static_cast<char32_t>(v));
  }
  return out;
}

std::string CxxLiteral(const std::u32string& s) {
  std::string out = "U\"";
  for (const char32_t c : s) absl::StrAppendFormat(&out, "\\U%08x", static_cast<uint32_t>(c));
  return out + "\"";
}

// Every code point but the surrogates is cleaned, split, stripped of accents
// and lower-cased as Hugging Face's BERT normaliser and pre-tokenizer do it,
// each probed on its own (tests/fixtures/wordpiece_reference/unicode_probe.js).
// utf8proc's Unicode 15 data differs from the reference's older tables on
// some code points; those are the overrides. When the reference or utf8proc
// changes, the overrides are regenerated by running this test with
// KAIZEN_WORDPIECE_OVERRIDES_OUT=<source>/server/text/wordpiece_unicode_overrides.inc.
TEST(WordPieceUnicodeTest, EveryCodePointIsHandledAsHuggingFaceDoes) {
  using wordpiece_internal::CodePointHandling;
  absl::StatusOr<std::string> probe = test_util::RunProgram(
      {"node", test_util::FixturePath("wordpiece_reference/unicode_probe.js")});
  ASSERT_TRUE(probe.ok()) << probe.status() << "\n(the reference is installed by scripts/setup.sh)";
  absl::flat_hash_map<char32_t, CodePointHandling> reference;
  for (absl::string_view line : absl::StrSplit(*probe, '\n', absl::SkipEmpty())) {
    const std::vector<absl::string_view> f = absl::StrSplit(line, ' ');
    ASSERT_EQ(f.size(), 5u) << line;
    uint32_t cp = 0;
    ASSERT_TRUE(absl::SimpleHexAtoi(f[0], &cp)) << line;
    const auto c = static_cast<char32_t>(cp);
    reference[c] = {f[1][0], f[2][0], ParseSequence(f[3], c), ParseSequence(f[4], c)};
  }
  ASSERT_GT(reference.size(), 100'000u);  // the private-use planes alone are dropped
  std::string generated =
      "// Generated by tests/unit/text/wordpiece_tokenizer_test.cc\n"
      "// (KAIZEN_WORDPIECE_OVERRIDES_OUT=<this file>): do not edit.\n"
      "// {code point, clean, split, stripped, lowered}, as Hugging Face's tables\n"
      "// handle it where utf8proc's data says otherwise.\n";
  int overrides = 0;
  int mismatches = 0;
  for (uint32_t cp = 0; cp <= 0x10FFFF; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    const auto c = static_cast<char32_t>(cp);
    const auto it = reference.find(c);
    const CodePointHandling want =
        it != reference.end()
            ? it->second
            : CodePointHandling{'k', 'n', std::u32string(1, c), std::u32string(1, c)};
    if (!(wordpiece_internal::FromUnicodeData(c) == want)) {
      ++overrides;
      absl::StrAppendFormat(&generated, "{0x%x, '%c', '%c', %s, %s},\n", cp, want.clean, want.split,
                            CxxLiteral(want.stripped), CxxLiteral(want.lowered));
    }
    const CodePointHandling got = wordpiece_internal::Handling(c);
    if (!(got == want) && ++mismatches <= 10) {
      ADD_FAILURE() << absl::StrFormat("U+%04X: ours %c %c %s %s, reference %c %c %s %s", cp,
                                       got.clean, got.split, CxxLiteral(got.stripped),
                                       CxxLiteral(got.lowered), want.clean, want.split,
                                       CxxLiteral(want.stripped), CxxLiteral(want.lowered));
    }
  }
  if (const char* out = std::getenv("KAIZEN_WORDPIECE_OVERRIDES_OUT"); out != nullptr) {
    test_util::WriteBinaryFile(out, generated);
  }
  EXPECT_EQ(mismatches, 0) << "of 1,112,064 code points; regenerate the overrides (see above)";
  std::cout << overrides << " code points take the reference's handling over utf8proc's\n";
}

TEST_F(WordPieceTokenizerTest, SplitsWordsIntoLongestPiecesAndNormalisesAsBertDoes) {
  auto t =
      WordPieceTokenizer::Create("[UNK]\nun\n##aff\n##able\n##a\nthe\n!\ncafe\n\xE6\x97\xA5\n", {});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT((*t)->Tokenize("The unaffable!"), ElementsAre("the", "un", "##aff", "##able", "!"));
  EXPECT_THAT((*t)->Tokenize("unaffablex CAF\xC3\x89"), ElementsAre("[UNK]", "cafe"));
  EXPECT_EQ((*t)->Normalize("  Caf\xC3\xA9\t\xE6\x97\xA5\xE6\x9C\xAC!\x01"),
            "cafe \xE6\x97\xA5 \xE6\x9C\xAC !");
  EXPECT_THAT(*(*t)->Encode("the"), ElementsAre(5));
  EXPECT_EQ((*t)->Id("##able"), 3);
  EXPECT_EQ((*t)->Id("missing"), -1);
  EXPECT_EQ((*t)->vocab_size(), 9);
  // Vocabulary lines lose trailing White_Space (Rust's trim_end), not U+FEFF.
  auto trimmed = WordPieceTokenizer::Create("[UNK]\r\nab\xC2\xA0 \t\ncd\xEF\xBB\xBF\n", {});
  ASSERT_TRUE(trimmed.ok()) << trimmed.status();
  EXPECT_EQ((*trimmed)->Id("[UNK]"), 0);
  EXPECT_EQ((*trimmed)->Id("ab"), 1);
  EXPECT_EQ((*trimmed)->Id("cd\xEF\xBB\xBF"), 2);
  // Bytes that are not UTF-8 count as U+FFFD, which cleaning drops.
  EXPECT_THAT((*t)->Tokenize("the\xFF!"), ElementsAre("the", "!"));
}

TEST_F(WordPieceTokenizerTest, RefusesVocabulariesOutsideItsLimits) {
  auto t = WordPieceTokenizer::Create("a\nb\n", {});
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("no unknown token '[UNK]'"));
  t = WordPieceTokenizer::Create("[UNK]\nok\nbad\xFF\n", {});
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("vocabulary line 3, byte 4: not UTF-8"));
  WordPieceLimits small;
  small.max_tokens = 2;
  t = WordPieceTokenizer::Create("[UNK]\na\nb\n", {}, small);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kResourceExhausted);
  small = {};
  small.max_token_bytes = 5;
  t = WordPieceTokenizer::Create("[UNK]\nabcdef\n", {}, small);
  EXPECT_THAT(std::string(t.status().message()), HasSubstr("vocabulary line 2: a token of 6"));
  WordPieceOptions o;
  o.max_input_chars_per_word = 0;
  t = WordPieceTokenizer::Create("[UNK]\n", o);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kaizen::text
