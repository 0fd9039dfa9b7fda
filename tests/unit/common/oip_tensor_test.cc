// The byte-level decoding of OIP input tensors (the part ModelInfer runs on
// untrusted request bytes before any tensor exists).
#include "server/common/oip_tensor.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

namespace kaizen::common {
namespace {

TEST(OipTensor, DecodesRawAndContentsFp32) {
  const std::vector<float> values = {1, 2, 3, 4, 5, 6, 7, 8};
  std::string raw(values.size() * sizeof(float), '\0');
  std::memcpy(raw.data(), values.data(), raw.size());
  auto from_raw = DecodeOipFp32({2, 1, 2, 2}, {1, 2, 2}, 4, &raw, {}, "input");
  ASSERT_TRUE(from_raw.ok()) << from_raw.status();
  EXPECT_EQ(from_raw->n, 2);
  EXPECT_EQ(from_raw->values, values);
  auto from_contents = DecodeOipFp32({1, 2, 2}, {1, 2, 2}, 4, nullptr,
                                     absl::MakeConstSpan(values.data(), 4), "input");
  ASSERT_TRUE(from_contents.ok()) << from_contents.status();
  EXPECT_EQ(from_contents->n, 1);
}

TEST(OipTensor, RejectsWrongSizesBatchesAndOverflow) {
  const std::string raw(12, '\0');
  EXPECT_TRUE(absl::IsInvalidArgument(
      DecodeOipFp32({1, 1, 2, 2}, {1, 2, 2}, 4, &raw, {}, "input").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      DecodeOipFp32({5, 1, 2, 2}, {1, 2, 2}, 4, &raw, {}, "input").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      DecodeOipFp32({0, 1, 2, 2}, {1, 2, 2}, 4, &raw, {}, "input").status()));
  // A model shape whose product with the batch overflows int64.
  const std::vector<int64_t> chw = {3, int64_t{1} << 31, int64_t{1} << 31};
  const absl::Status overflow =
      DecodeOipFp32({2, 3, int64_t{1} << 31, int64_t{1} << 31}, chw, 4, &raw, {}, "input").status();
  EXPECT_TRUE(absl::IsInvalidArgument(overflow)) << overflow;
  EXPECT_NE(overflow.message().find("overflows"), absl::string_view::npos) << overflow;
}

TEST(OipTensor, SplitsRawBytesAndRejectsLengthsPastTheEnd) {
  const std::string raw = std::string(
      "\x02\x00\x00\x00"
      "ab"
      "\x00\x00\x00\x00",
      10);
  auto elements = SplitOipRawBytes(raw, "input");
  ASSERT_TRUE(elements.ok()) << elements.status();
  ASSERT_EQ(elements->size(), 2u);
  EXPECT_EQ((*elements)[0], "ab");
  EXPECT_EQ((*elements)[1], "");
  const absl::Status past = SplitOipRawBytes(std::string("\xff\xff\xff\xff"
                                                         "ab",
                                                         6),
                                             "input")
                                .status();
  EXPECT_TRUE(absl::IsInvalidArgument(past));
  EXPECT_NE(past.message().find("declares 4294967295 bytes but only 2 remain"),
            absl::string_view::npos)
      << past;
}

}  // namespace
}  // namespace kaizen::common
