#include "server/common/sha256.h"

#include <gtest/gtest.h>

#include <string>

namespace kaizen::common {
namespace {

// FIPS 180-2 test vectors.
TEST(Sha256Test, KnownDigests) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256Test, IncrementalUpdatesMatchOneShot) {
  const std::string text(100000, 'a');
  Sha256 hasher;
  for (size_t at = 0; at < text.size(); at += 7919) {
    hasher.Update(absl::string_view(text).substr(at, 7919));
  }
  EXPECT_EQ(hasher.HexDigest(), Sha256Hex(text));
}

TEST(Sha256Test, PointerAndViewOverloadsAgree) {
  const char bytes[] = {'\0', '\x01', '\xff', 'k'};
  Sha256 a;
  a.Update(bytes, sizeof(bytes));
  Sha256 b;
  b.Update(absl::string_view(bytes, sizeof(bytes)));
  EXPECT_EQ(a.HexDigest(), b.HexDigest());
}

}  // namespace
}  // namespace kaizen::common
