// Crc32 must give zlib's values: record files written before ISA-L computed
// the checksums (and any written by zlib-based tools) must still verify.
#include "server/datasets/crc32.h"

#include <zlib.h>

#include <random>
#include <string>

#include "gtest/gtest.h"

namespace kaizen::datasets {
namespace {

uint32_t ZlibCrc(uint32_t crc, const std::string& data) {
  return static_cast<uint32_t>(
      crc32_z(crc, reinterpret_cast<const Bytef*>(data.data()), data.size()));
}

TEST(Crc32Test, MatchesZlibOnEveryLengthAndContinuation) {
  EXPECT_EQ(Crc32(0, "123456789", 9), 0xcbf43926u);  // the standard check value
  EXPECT_EQ(Crc32(0, "", 0), 0u);
  std::mt19937 rng(7);
  for (size_t n : {1, 2, 3, 15, 16, 17, 63, 64, 65, 784, 4096, 100'003, 1 << 20}) {
    std::string data(n, '\0');
    for (char& c : data) c = static_cast<char>(rng());
    SCOPED_TRACE(n);
    EXPECT_EQ(Crc32(0, data.data(), n), ZlibCrc(0, data));
    // Continuing over a split gives the whole's value, as with zlib.
    const size_t cut = n / 3;
    EXPECT_EQ(Crc32(Crc32(0, data.data(), cut), data.data() + cut, n - cut), ZlibCrc(0, data));
    EXPECT_EQ(Crc32(0x12345678u, data.data(), n), ZlibCrc(0x12345678u, data));
  }
}

}  // namespace
}  // namespace kaizen::datasets
