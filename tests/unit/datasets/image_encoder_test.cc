// The stored-resolution cap's pieces: CappedSize, AreaDownscale and the JPEG
// and PNG encoders, each checked through the real decoder.
#include "server/datasets/image_encoder.h"

#include <cmath>
#include <cstdlib>
#include <numeric>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/datasets/image_decoder.h"
#include "tests/test_util/image_fixtures.h"

namespace kaizen::datasets {
namespace {

using ::testing::HasSubstr;

Image MakeImage(int32_t height, int32_t width, int32_t channels, uint32_t seed) {
  Image image;
  image.height = height;
  image.width = width;
  image.channels = channels;
  image.pixels = test_util::MakePixels(width, height, channels, seed);
  return image;
}

double Mean(const std::vector<uint8_t>& pixels) {
  return std::accumulate(pixels.begin(), pixels.end(), 0.0) / static_cast<double>(pixels.size());
}

TEST(CappedSizeTest, ScalesTheShorterSideToTheCapAndKeepsTheAspectRatio) {
  EXPECT_EQ(CappedSize(3000, 4000, 256).height, 256);
  EXPECT_EQ(CappedSize(3000, 4000, 256).width, 341);  // 4000 * 256 / 3000 = 341.3
  EXPECT_EQ(CappedSize(4000, 3000, 256).height, 341);
  EXPECT_EQ(CappedSize(4000, 3000, 256).width, 256);
  EXPECT_EQ(CappedSize(500, 500, 100).height, 100);
  EXPECT_EQ(CappedSize(500, 500, 100).width, 100);
  // A very long strip keeps a longer side of at least 1 and at most its own.
  EXPECT_EQ(CappedSize(1000, 10, 5).width, 5);
  EXPECT_EQ(CappedSize(1000, 10, 5).height, 500);
}

TEST(CappedSizeTest, LeavesImagesAtOrBelowTheCapAndAnUnsetCapAlone) {
  EXPECT_EQ(CappedSize(256, 4000, 256).height, 256);
  EXPECT_EQ(CappedSize(256, 4000, 256).width, 4000);
  EXPECT_EQ(CappedSize(100, 80, 256).width, 80);
  EXPECT_EQ(CappedSize(3000, 4000, 0).height, 3000);
  EXPECT_EQ(CappedSize(3000, 4000, -1).width, 4000);
}

TEST(AreaDownscaleTest, AnIntegerFactorAveragesEachBlock) {
  Image image;
  image.height = 4;
  image.width = 4;
  image.channels = 1;
  image.pixels = {0,   10,  20,  30,   //
                  40,  50,  60,  70,   //
                  100, 100, 200, 202,  //
                  100, 100, 200, 202};
  const Image out = AreaDownscale(image, 2, 2);
  ASSERT_EQ(out.height, 2);
  ASSERT_EQ(out.width, 2);
  EXPECT_EQ(out.pixels, (std::vector<uint8_t>{25, 45, 100, 201}));
}

TEST(AreaDownscaleTest, AFractionalFactorWeighsPartlyCoveredPixels) {
  // Three pixels into two: each output covers 1.5 sources.
  Image image;
  image.height = 1;
  image.width = 3;
  image.channels = 1;
  image.pixels = {0, 90, 180};
  const Image out = AreaDownscale(image, 1, 2);
  // (0 + 0.5 * 90) / 1.5 = 30 and (0.5 * 90 + 180) / 1.5 = 150.
  EXPECT_EQ(out.pixels, (std::vector<uint8_t>{30, 150}));
}

TEST(AreaDownscaleTest, FinePatternsAverageOutInsteadOfAliasing) {
  // One-pixel stripes at a factor of 4: point sampling would keep one stripe
  // colour; area averaging gives their mean everywhere.
  Image image;
  image.height = 64;
  image.width = 64;
  image.channels = 3;
  image.pixels.resize(64 * 64 * 3);
  for (size_t i = 0; i < image.pixels.size(); ++i) {
    image.pixels[i] = ((i / 3) % 2 == 0) ? 0 : 200;
  }
  const Image out = AreaDownscale(image, 16, 16);
  for (uint8_t v : out.pixels) ASSERT_EQ(v, 100);
}

TEST(AreaDownscaleTest, KeepsTheMeanOfANaturalImage) {
  const Image image = MakeImage(333, 517, 3, 7);
  const Image out = AreaDownscale(image, 100, 155);
  ASSERT_EQ(out.pixels.size(), 100u * 155 * 3);
  EXPECT_NEAR(Mean(out.pixels), Mean(image.pixels), 0.5);
}

TEST(EncodeJpegTest, RoundTripsThroughTheDecoderCloseToTheSource) {
  for (int channels : {1, 3}) {
    const Image image = MakeImage(120, 90, channels, 3);
    const absl::StatusOr<std::string> jpeg = EncodeJpeg(image, 95);
    ASSERT_TRUE(jpeg.ok()) << jpeg.status();
    EXPECT_EQ(SniffImageFormat(*jpeg), ImageFormat::kJpeg);
    const absl::StatusOr<Image> back = DecodeImage(*jpeg, 1 << 20);
    ASSERT_TRUE(back.ok()) << back.status();
    ASSERT_EQ(back->height, 120);
    ASSERT_EQ(back->width, 90);
    ASSERT_EQ(back->channels, channels);
    double error = 0;
    for (size_t i = 0; i < image.pixels.size(); ++i) {
      error += std::abs(static_cast<int>(back->pixels[i]) - static_cast<int>(image.pixels[i]));
    }
    EXPECT_LT(error / static_cast<double>(image.pixels.size()), 4.0) << channels << " channels";
  }
}

TEST(EncodeJpegTest, LowerQualityGivesFewerBytes) {
  const Image image = MakeImage(200, 200, 3, 4);
  const absl::StatusOr<std::string> high = EncodeJpeg(image, 95);
  const absl::StatusOr<std::string> low = EncodeJpeg(image, 30);
  ASSERT_TRUE(high.ok() && low.ok());
  EXPECT_LT(low->size(), high->size());
}

TEST(EncodePngTest, RoundTripsExactly) {
  for (int channels : {1, 3}) {
    const Image image = MakeImage(77, 131, channels, 5);
    const absl::StatusOr<std::string> png = EncodePng(image);
    ASSERT_TRUE(png.ok()) << png.status();
    EXPECT_EQ(SniffImageFormat(*png), ImageFormat::kPng);
    const absl::StatusOr<Image> back = DecodeImage(*png, 1 << 20);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->height, 77);
    EXPECT_EQ(back->width, 131);
    EXPECT_EQ(back->pixels, image.pixels) << channels << " channels";
  }
}

TEST(EncoderTest, RefusesWhatItCannotEncode) {
  Image two_channels = MakeImage(8, 8, 2, 1);
  EXPECT_THAT(std::string(EncodeJpeg(two_channels, 90).status().message()), HasSubstr("8x8x2"));
  EXPECT_EQ(EncodePng(two_channels).status().code(), absl::StatusCode::kInvalidArgument);
  Image short_pixels = MakeImage(8, 8, 3, 1);
  short_pixels.pixels.pop_back();
  EXPECT_EQ(EncodeJpeg(short_pixels, 90).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EncodePng(short_pixels).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(EncodeJpeg(MakeImage(8, 8, 3, 1), 0).status().message()),
              HasSubstr("quality 0"));
  EXPECT_EQ(EncodeJpeg(Image{}, 90).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kaizen::datasets
