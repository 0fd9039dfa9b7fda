#include "server/text/wordpiece_tokenizer.h"

#include <utf8proc.h>

#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/common/utf8.h"

namespace kaizen::text {
namespace {

constexpr char32_t kReplacement = 0xFFFD;

void AppendUtf8(char32_t c, std::string* out) {
  utf8proc_uint8_t buf[4];
  const utf8proc_ssize_t n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(c), buf);
  out->append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
}

std::u32string Decode(absl::string_view utf8) {
  std::u32string out;
  out.reserve(utf8.size());
  for (size_t i = 0; i < utf8.size();) {
    const char32_t c = common::NextCodePoint(utf8, &i);
    out.push_back(c == common::kInvalidCodePoint ? kReplacement : c);
  }
  return out;
}

std::string ToUtf8(const std::u32string& text) {
  std::string out;
  out.reserve(text.size());
  for (const char32_t c : text) AppendUtf8(c, &out);
  return out;
}

utf8proc_category_t Category(char32_t c) {
  return utf8proc_category(static_cast<utf8proc_int32_t>(c));
}

// Rust's char::is_whitespace: the Unicode White_Space property.
bool IsWhiteSpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// BERT's "control": the Other categories but Cn (unassigned characters stay,
// as in Hugging Face's tables, which date them by no Unicode version), and
// not tab, LF or CR.
bool IsControl(char32_t c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  switch (Category(c)) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CS:
      return true;
    default:
      return false;
  }
}

// The CJK Unified Ideographs blocks BERT's tokenizer separates.
bool IsChineseChar(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

bool IsPunctuation(char32_t c) {
  if (c < 0x80) {
    return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) ||
           (c >= 0x7B && c <= 0x7E);
  }
  switch (Category(c)) {
    case UTF8PROC_CATEGORY_PC:
    case UTF8PROC_CATEGORY_PD:
    case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI:
    case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
      return true;
    default:
      return false;
  }
}

// Canonical decomposition (NFD) of the whole text, with the canonical
// ordering of combining marks.
std::u32string Nfd(const std::u32string& text) {
  const std::string utf8 = ToUtf8(text);
  utf8proc_uint8_t* out = nullptr;
  const utf8proc_ssize_t n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(utf8.data()),
                   static_cast<utf8proc_ssize_t>(utf8.size()), &out,
                   static_cast<utf8proc_option_t>(UTF8PROC_DECOMPOSE | UTF8PROC_STABLE));
  if (n < 0) return text;  // only on allocation failure: the text unnormalised
  std::u32string decomposed = Decode(absl::string_view(reinterpret_cast<char*>(out), n));
  std::free(out);
  return decomposed;
}

}  // namespace

absl::StatusOr<std::unique_ptr<WordPieceTokenizer>> WordPieceTokenizer::Create(
    absl::string_view vocab_txt, WordPieceOptions options, const WordPieceLimits& limits) {
  if (static_cast<int64_t>(vocab_txt.size()) > limits.max_vocab_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the vocabulary is ", vocab_txt.size(), " bytes; the limit is ", limits.max_vocab_bytes));
  }
  if (options.max_input_chars_per_word < 1 || options.max_input_chars_per_word > 10'000) {
    return absl::InvalidArgumentError(absl::StrCat("max_input_chars_per_word is ",
                                                   options.max_input_chars_per_word,
                                                   "; it must be 1 to 10000"));
  }
  if (options.continuing_subword_prefix.size() > 16 ||
      !common::IsValidUtf8(options.continuing_subword_prefix)) {
    return absl::InvalidArgumentError(
        "continuing_subword_prefix must be UTF-8 of at most 16 bytes");
  }
  std::unique_ptr<WordPieceTokenizer> t(new WordPieceTokenizer());
  t->options_ = std::move(options);
  if (!vocab_txt.empty() && vocab_txt.back() == '\n') vocab_txt.remove_suffix(1);
  int64_t line = 0;
  for (absl::string_view token : absl::StrSplit(vocab_txt, '\n')) {
    ++line;
    if (line > limits.max_tokens) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the vocabulary has more than ", limits.max_tokens,
                       " tokens (lines); the limit is ", limits.max_tokens));
    }
    // Hugging Face's reader trims trailing white space (a CR of CRLF lines).
    while (!token.empty() &&
           (token.back() == '\r' || token.back() == ' ' || token.back() == '\t')) {
      token.remove_suffix(1);
    }
    if (static_cast<int64_t>(token.size()) > limits.max_token_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("vocabulary line ", line, ": a token of ",
                                                     token.size(), " bytes; the limit is ",
                                                     limits.max_token_bytes));
    }
    if (const int64_t bad = common::FirstInvalidUtf8Byte(token); bad >= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("vocabulary line ", line, ", byte ", bad + 1, ": not UTF-8"));
    }
    const auto id = static_cast<int32_t>(line - 1);
    t->vocab_.insert_or_assign(std::string(token), id);
    t->tokens_.emplace_back(token);
  }
  t->vocab_size_ = static_cast<int32_t>(t->tokens_.size());
  const auto unk = t->vocab_.find(t->options_.unk_token);
  if (unk == t->vocab_.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the vocabulary has no unknown token '", t->options_.unk_token, "'"));
  }
  t->unk_id_ = unk->second;
  return t;
}

std::vector<std::u32string> WordPieceTokenizer::Words(absl::string_view utf8) const {
  std::u32string text = Decode(utf8);
  if (options_.clean_text) {
    std::u32string cleaned;
    cleaned.reserve(text.size());
    for (const char32_t c : text) {
      if (c == 0 || c == kReplacement || IsControl(c)) continue;
      cleaned.push_back(IsWhiteSpace(c) ? U' ' : c);
    }
    text = std::move(cleaned);
  }
  if (options_.handle_chinese_chars) {
    std::u32string spaced;
    spaced.reserve(text.size());
    for (const char32_t c : text) {
      if (IsChineseChar(c)) {
        spaced.push_back(U' ');
        spaced.push_back(c);
        spaced.push_back(U' ');
      } else {
        spaced.push_back(c);
      }
    }
    text = std::move(spaced);
  }
  if (options_.strip_accents.value_or(options_.lowercase)) {
    std::u32string stripped;
    for (const char32_t c : Nfd(text)) {
      if (Category(c) != UTF8PROC_CATEGORY_MN) stripped.push_back(c);
    }
    text = std::move(stripped);
  }
  if (options_.lowercase) {
    std::u32string lower;
    lower.reserve(text.size());
    for (const char32_t c : text) {
      if (c == 0x130) {  // the one unconditional multi-character lower case
        lower.push_back(U'i');
        lower.push_back(0x307);
      } else {
        lower.push_back(static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))));
      }
    }
    text = std::move(lower);
  }
  std::vector<std::u32string> words;
  std::u32string word;
  for (const char32_t c : text) {
    if (IsWhiteSpace(c)) {
      if (!word.empty()) words.push_back(std::move(word));
      word.clear();
    } else if (IsPunctuation(c)) {
      if (!word.empty()) words.push_back(std::move(word));
      word.clear();
      words.push_back(std::u32string(1, c));
    } else {
      word.push_back(c);
    }
  }
  if (!word.empty()) words.push_back(std::move(word));
  return words;
}

void WordPieceTokenizer::EncodeWord(const std::u32string& word, std::vector<int32_t>* ids,
                                    std::vector<std::string>* pieces) const {
  const auto unknown = [&] {
    ids->push_back(unk_id_);
    if (pieces != nullptr) pieces->push_back(options_.unk_token);
  };
  if (word.size() > static_cast<size_t>(options_.max_input_chars_per_word)) return unknown();
  // Byte offsets of each character in the word's UTF-8.
  std::string utf8;
  std::vector<size_t> offsets;
  offsets.reserve(word.size() + 1);
  for (const char32_t c : word) {
    offsets.push_back(utf8.size());
    AppendUtf8(c, &utf8);
  }
  offsets.push_back(utf8.size());
  const size_t first_id = ids->size();
  const size_t first_piece = pieces != nullptr ? pieces->size() : 0;
  std::string candidate;
  for (size_t start = 0; start < word.size();) {
    size_t end = word.size();
    int32_t found = -1;
    for (; end > start; --end) {
      candidate.clear();
      if (start > 0) candidate = options_.continuing_subword_prefix;
      candidate.append(utf8, offsets[start], offsets[end] - offsets[start]);
      const auto it = vocab_.find(candidate);
      if (it != vocab_.end()) {
        found = it->second;
        break;
      }
    }
    if (found < 0) {
      ids->resize(first_id);
      if (pieces != nullptr) pieces->resize(first_piece);
      return unknown();
    }
    ids->push_back(found);
    if (pieces != nullptr) pieces->push_back(candidate);
    start = end;
  }
}

std::vector<int32_t> WordPieceTokenizer::Encode(absl::string_view utf8) const {
  std::vector<int32_t> ids;
  for (const std::u32string& word : Words(utf8)) EncodeWord(word, &ids, nullptr);
  return ids;
}

std::vector<std::string> WordPieceTokenizer::Tokenize(absl::string_view utf8) const {
  std::vector<int32_t> ids;
  std::vector<std::string> pieces;
  for (const std::u32string& word : Words(utf8)) EncodeWord(word, &ids, &pieces);
  return pieces;
}

std::string WordPieceTokenizer::Normalize(absl::string_view utf8) const {
  std::string out;
  for (const std::u32string& word : Words(utf8)) {
    if (!out.empty()) out.push_back(' ');
    out += ToUtf8(word);
  }
  return out;
}

int32_t WordPieceTokenizer::Id(absl::string_view token) const {
  const auto it = vocab_.find(token);
  return it == vocab_.end() ? -1 : it->second;
}

}  // namespace kaizen::text
