// Well-formed UTF-8: no overlong forms, no surrogates, nothing above
// U+10FFFF. Free of protobuf, so that code loaded beside another protobuf
// (server/text) can use it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace kaizen::common {

inline constexpr char32_t kInvalidCodePoint = 0xFFFFFFFF;

// Decodes one code point at text[*i] and advances *i; kInvalidCodePoint
// (advancing by one byte) when the bytes there are not well-formed UTF-8.
char32_t NextCodePoint(absl::string_view text, size_t* i);

// True when `text` is well-formed UTF-8.
bool IsValidUtf8(absl::string_view text);

// The offset of the first byte of `text` that is not part of well-formed
// UTF-8, or -1 when all of it is.
int64_t FirstInvalidUtf8Byte(absl::string_view text);

// `text` with every byte that is not part of well-formed UTF-8 replaced by
// U+FFFD, for informational strings (file paths in reports) that are kept
// rather than refused.
std::string SanitizeUtf8(absl::string_view text);

}  // namespace kaizen::common
