// Byte-level writers for building binary fixtures (IDX files, PNG chunks).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

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

// An IDX images file (idx3-ubyte) of n images of rows x cols; image i is
// filled with the value i (so the first 256 all differ).
inline std::string IdxImages(uint32_t n, uint32_t rows, uint32_t cols) {
  std::string out;
  AppendBigEndian32(&out, 0x00000803);
  AppendBigEndian32(&out, n);
  AppendBigEndian32(&out, rows);
  AppendBigEndian32(&out, cols);
  for (uint32_t i = 0; i < n; ++i) out.append(rows * cols, static_cast<char>(i));
  return out;
}

// An IDX labels file (idx1-ubyte).
inline std::string IdxLabels(const std::vector<uint8_t>& labels) {
  std::string out;
  AppendBigEndian32(&out, 0x00000801);
  AppendBigEndian32(&out, static_cast<uint32_t>(labels.size()));
  out.append(labels.begin(), labels.end());
  return out;
}

}  // namespace kaizen::test_util
