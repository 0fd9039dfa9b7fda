#include "server/common/utf8.h"

namespace kaizen::common {

char32_t NextCodePoint(absl::string_view text, size_t* i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(text[*i + k]); };
  const unsigned char c = b(0);
  size_t len;
  char32_t cp;
  char32_t min;
  if (c < 0x80) {
    ++*i;
    return c;
  } else if ((c & 0xE0) == 0xC0) {
    len = 2, cp = c & 0x1F, min = 0x80;
  } else if ((c & 0xF0) == 0xE0) {
    len = 3, cp = c & 0x0F, min = 0x800;
  } else if ((c & 0xF8) == 0xF0) {
    len = 4, cp = c & 0x07, min = 0x10000;
  } else {
    ++*i;
    return kInvalidCodePoint;
  }
  if (*i + len > text.size()) {
    ++*i;
    return kInvalidCodePoint;
  }
  for (size_t k = 1; k < len; ++k) {
    if ((b(k) & 0xC0) != 0x80) {
      ++*i;
      return kInvalidCodePoint;
    }
    cp = (cp << 6) | (b(k) & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
    ++*i;
    return kInvalidCodePoint;
  }
  *i += len;
  return cp;
}

bool IsValidUtf8(absl::string_view text) { return FirstInvalidUtf8Byte(text) < 0; }

int64_t FirstInvalidUtf8Byte(absl::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const size_t at = i;
    if (NextCodePoint(text, &i) == kInvalidCodePoint) return static_cast<int64_t>(at);
  }
  return -1;
}

std::string SanitizeUtf8(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const size_t at = i;
    if (NextCodePoint(text, &i) == kInvalidCodePoint) {
      out.append("\xEF\xBF\xBD");  // U+FFFD
    } else {
      out.append(text.data() + at, i - at);
    }
  }
  return out;
}

}  // namespace kaizen::common
