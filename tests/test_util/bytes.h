// Byte-level writers for building binary fixtures (IDX files, PNG chunks).
#pragma once

#include <cstdint>
#include <string>

namespace kaizen::test_util {

// Appends `v` as four bytes, most significant first.
inline void AppendBigEndian32(std::string* out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out->push_back(static_cast<char>(v >> shift));
}

// `v` as four bytes, most significant first.
inline std::string BigEndian32(uint32_t v) {
  std::string out;
  AppendBigEndian32(&out, v);
  return out;
}

}  // namespace kaizen::test_util
