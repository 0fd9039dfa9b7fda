#include "server/imaging/image_convert.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"

namespace kaizen::imaging {
namespace {

TEST(ImageConvertTest, SameShapeTransposesHwcToChw) {
  // 1x2 RGB: pixel 0 = (1, 2, 3), pixel 1 = (4, 5, 6).
  const std::vector<uint8_t> src = {1, 2, 3, 4, 5, 6};
  std::vector<uint8_t> dst(6);
  ConvertImage(src.data(), 1, 2, 3, 3, 1, 2, dst.data());
  EXPECT_EQ(dst, (std::vector<uint8_t>{1, 4, 2, 5, 3, 6}));
}

TEST(ImageConvertTest, GrayRepeatsIntoRgb) {
  const std::vector<uint8_t> src = {10, 20};
  std::vector<uint8_t> dst(6);
  ConvertImage(src.data(), 1, 2, 1, 3, 1, 2, dst.data());
  EXPECT_EQ(dst, (std::vector<uint8_t>{10, 20, 10, 20, 10, 20}));
}

TEST(ImageConvertTest, RgbBecomesLuminance) {
  const std::vector<uint8_t> src = {200, 100, 50};
  std::vector<uint8_t> dst(1);
  ConvertImage(src.data(), 1, 1, 3, 1, 1, 1, dst.data());
  EXPECT_EQ(dst[0], 124);  // 0.299 * 200 + 0.587 * 100 + 0.114 * 50
}

TEST(ImageConvertTest, AlphaIsDroppedAndFlatColourSurvivesResize) {
  std::vector<uint8_t> src;
  for (int i = 0; i < 4 * 4; ++i) src.insert(src.end(), {30, 60, 90, 255});
  std::vector<uint8_t> dst(3 * 2 * 2);
  ConvertImage(src.data(), 4, 4, 4, 3, 2, 2, dst.data());
  EXPECT_EQ(dst, (std::vector<uint8_t>{30, 30, 30, 30, 60, 60, 60, 60, 90, 90, 90, 90}));
}

}  // namespace
}  // namespace kaizen::imaging
