// Overflow-checked integer arithmetic for sizes read from untrusted headers
// (IDX dimensions, declared upload part sizes, record shapes): a product that
// wraps around would otherwise pass a limit check and size an allocation.
#pragma once

#include <cstdint>
#include <optional>

namespace kaizen::common {

// a * b, or nullopt when the product does not fit in int64_t.
inline std::optional<int64_t> CheckedMul(int64_t a, int64_t b) {
  int64_t out = 0;
  if (__builtin_mul_overflow(a, b, &out)) return std::nullopt;
  return out;
}

// a + b, or nullopt when the sum does not fit in int64_t.
inline std::optional<int64_t> CheckedAdd(int64_t a, int64_t b) {
  int64_t out = 0;
  if (__builtin_add_overflow(a, b, &out)) return std::nullopt;
  return out;
}

}  // namespace kaizen::common
