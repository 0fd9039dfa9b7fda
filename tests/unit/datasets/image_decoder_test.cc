#include "server/datasets/image_decoder.h"

// clang-format off
#include <cstdio>
#include <jpeglib.h>
// clang-format on
#include <zlib.h>

#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util/bytes.h"
#include "tests/test_util/image_fixtures.h"

namespace kaizen::datasets {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::StartsWith;

using namespace std::string_literals;  // NOLINT: embedded NULs

constexpr int64_t kLimit = 25'000'000;

double MeanAbsDiff(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  EXPECT_EQ(a.size(), b.size());
  double sum = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) sum += std::abs(a[i] - b[i]);
  return a.empty() ? 0 : sum / a.size();
}

// A PNG chunk with a correct CRC.
std::string PngChunk(const std::string& type, const std::string& payload) {
  std::string chunk;
  test_util::AppendBigEndian32(&chunk, static_cast<uint32_t>(payload.size()));
  const std::string body = type + payload;
  chunk += body;
  test_util::AppendBigEndian32(
      &chunk,
      static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(body.data()), body.size())));
  return chunk;
}

// Only a header claiming width x height RGB pixels: no image data at all.
std::string PngHeaderOnly(uint32_t width, uint32_t height) {
  std::string ihdr;
  test_util::AppendBigEndian32(&ihdr, width);
  test_util::AppendBigEndian32(&ihdr, height);
  ihdr += std::string("\x08\x02\x00\x00\x00", 5);  // 8-bit RGB, no interlace
  return std::string("\x89PNG\r\n\x1A\n", 8) + PngChunk("IHDR", ihdr) + PngChunk("IEND", "");
}

// A CMYK JPEG as Photoshop writes them (Adobe marker, inverted values), every
// pixel the raw CMYK value `cmyk`.
std::string EncodeCmykJpeg(int width, int height, const uint8_t cmyk[4]) {
  jpeg_compress_struct cinfo;
  jpeg_error_mgr err;
  cinfo.err = jpeg_std_error(&err);
  jpeg_create_compress(&cinfo);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;  // NOLINT(runtime/int)
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = width;
  cinfo.image_height = height;
  cinfo.input_components = 4;
  cinfo.in_color_space = JCS_CMYK;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, 95, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  std::vector<uint8_t> row(static_cast<size_t>(width) * 4);
  for (int x = 0; x < width; ++x) std::copy(cmyk, cmyk + 4, row.begin() + 4 * x);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW p = row.data();
    jpeg_write_scanlines(&cinfo, &p, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::string out(reinterpret_cast<const char*>(buffer), size);
  std::free(buffer);
  return out;
}

// The four 32x16 quadrants of a 64x32 RGB image, each one flat colour so that
// JPEG keeps them apart: top-left red, top-right green, bottom-left blue,
// bottom-right white.
enum Quadrant { kRed, kGreen, kBlue, kWhite };
constexpr uint8_t kQuadrantColours[4][3] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {255, 255, 255}};

std::string QuadrantJpeg() {
  std::vector<uint8_t> pixels;
  for (int y = 0; y < 32; ++y) {
    for (int x = 0; x < 64; ++x) {
      const int q = (y < 16 ? 0 : 2) + (x < 32 ? 0 : 1);
      pixels.insert(pixels.end(), kQuadrantColours[q], kQuadrantColours[q] + 3);
    }
  }
  return test_util::EncodeJpegPixels(pixels, 64, 32, 3, 95);
}

// Which colour the centre of each quadrant of `image` is (-1 if none is near):
// {top-left, top-right, bottom-left, bottom-right}.
std::vector<int> QuadrantColours(const Image& image) {
  std::vector<int> found;
  for (int qy : {0, 1}) {
    for (int qx : {0, 1}) {
      const int x = image.width / 4 + qx * image.width / 2;
      const int y = image.height / 4 + qy * image.height / 2;
      const uint8_t* p = &image.pixels[(static_cast<size_t>(y) * image.width + x) * 3];
      int match = -1;
      for (int c = 0; c < 4; ++c) {
        if (std::abs(p[0] - kQuadrantColours[c][0]) < 40 &&
            std::abs(p[1] - kQuadrantColours[c][1]) < 40 &&
            std::abs(p[2] - kQuadrantColours[c][2]) < 40) {
          match = c;
        }
      }
      found.push_back(match);
    }
  }
  return found;
}

// Where output pixel (x, y) of an upright image comes from in the stored
// w x h image, per EXIF orientation, written as the EXIF specification
// describes each one (an independent check of the decoder's strides).
std::pair<int, int> StoredPixelOf(int orientation, int x, int y, int w, int h) {
  switch (orientation) {
    case 2:  // mirrored left to right
      return {w - 1 - x, y};
    case 3:  // turned 180 degrees
      return {w - 1 - x, h - 1 - y};
    case 4:  // flipped top to bottom
      return {x, h - 1 - y};
    case 5:  // transposed: rows become columns
      return {y, x};
    case 6:  // turned 90 degrees clockwise: the stored left column is the top row
      return {y, h - 1 - x};
    case 7:  // transversed
      return {w - 1 - y, h - 1 - x};
    case 8:  // turned 90 degrees anticlockwise: the stored right column is the top row
      return {w - 1 - y, x};
    default:
      return {x, y};
  }
}

TEST(ImageDecoderTest, DecodesJpegGreyAndRgb) {
  for (int channels : {1, 3}) {
    SCOPED_TRACE(channels);
    const std::string jpeg = test_util::EncodeJpeg(40, 30, channels, 7, 95);
    absl::StatusOr<Image> image = DecodeImage(jpeg, kLimit);
    ASSERT_TRUE(image.ok()) << image.status();
    EXPECT_EQ(image->width, 40);
    EXPECT_EQ(image->height, 30);
    EXPECT_EQ(image->channels, channels);
    // Lossy, but close to what was encoded.
    EXPECT_LT(MeanAbsDiff(image->pixels, test_util::MakePixels(40, 30, channels, 7)), 10.0);
  }
}

TEST(ImageDecoderTest, DecodesPngExactly) {
  for (int channels : {1, 3}) {
    SCOPED_TRACE(channels);
    absl::StatusOr<Image> image = DecodeImage(test_util::EncodePng(17, 9, channels, 3), kLimit);
    ASSERT_TRUE(image.ok()) << image.status();
    EXPECT_EQ(image->width, 17);
    EXPECT_EQ(image->height, 9);
    EXPECT_EQ(image->channels, channels);
    EXPECT_EQ(image->pixels, test_util::MakePixels(17, 9, channels, 3));
  }
}

TEST(ImageDecoderTest, DecodesPngWithAlphaToRgb) {
  absl::StatusOr<Image> image = DecodeImage(test_util::EncodePng(5, 4, 4, 11), kLimit);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->channels, 3);
  const std::vector<uint8_t> rgba = test_util::MakePixels(5, 4, 4, 11);
  std::vector<uint8_t> rgb;
  for (size_t i = 0; i < rgba.size(); i += 4) rgb.insert(rgb.end(), &rgba[i], &rgba[i + 3]);
  EXPECT_EQ(image->pixels, rgb);

  absl::StatusOr<Image> grey = DecodeImage(test_util::EncodePng(5, 4, 2, 11), kLimit);
  ASSERT_TRUE(grey.ok()) << grey.status();
  EXPECT_EQ(grey->channels, 1);
  EXPECT_EQ(grey->pixels.size(), 20u);
}

// A 2x1 PNG of colour type `color_type` (3: palette, 0: grey) whose rows are
// `row` (one byte a pixel), with a PLTE of red and blue for the palette, and
// a tRNS chunk: the way optimisers write small transparent images.
std::string PngWithTrns(int color_type, const std::string& row, const std::string& trns) {
  std::string ihdr;
  test_util::AppendBigEndian32(&ihdr, 2);
  test_util::AppendBigEndian32(&ihdr, 1);
  ihdr +=
      std::string(1, '\x08') + std::string(1, static_cast<char>(color_type)) + std::string(3, '\0');
  const std::string raw = std::string(1, '\0') + row;  // filter type 0
  uLongf packed_size = compressBound(raw.size());
  std::string packed(packed_size, '\0');
  EXPECT_EQ(compress(reinterpret_cast<Bytef*>(packed.data()), &packed_size,
                     reinterpret_cast<const Bytef*>(raw.data()), raw.size()),
            Z_OK);
  packed.resize(packed_size);
  std::string png = std::string("\x89PNG\r\n\x1A\n", 8) + PngChunk("IHDR", ihdr);
  if (color_type == 3) png += PngChunk("PLTE", std::string("\xFF\x00\x00\x00\x00\xFF", 6));
  return png + PngChunk("tRNS", trns) + PngChunk("IDAT", packed) + PngChunk("IEND", "");
}

TEST(ImageDecoderTest, DropsTransparencyGivenAsATrnsChunk) {
  absl::StatusOr<Image> palette =
      DecodeImage(PngWithTrns(3, std::string("\x00\x01", 2), std::string("\x00", 1)), kLimit);
  ASSERT_TRUE(palette.ok()) << palette.status();
  EXPECT_EQ(palette->channels, 3);
  EXPECT_EQ(palette->pixels, (std::vector<uint8_t>{255, 0, 0, 0, 0, 255}));

  absl::StatusOr<Image> grey =
      DecodeImage(PngWithTrns(0, std::string("\x07\x80", 2), std::string("\x00\x07", 2)), kLimit);
  ASSERT_TRUE(grey.ok()) << grey.status();
  EXPECT_EQ(grey->channels, 1);
  EXPECT_EQ(grey->pixels, (std::vector<uint8_t>{7, 128}));
}

TEST(ImageDecoderTest, ConvertsCmykJpegToRgb) {
  const uint8_t red_in_adobe_cmyk[4] = {255, 0, 0, 255};  // inverted: no cyan ink, no black
  absl::StatusOr<Image> image = DecodeImage(EncodeCmykJpeg(16, 16, red_in_adobe_cmyk), kLimit);
  ASSERT_TRUE(image.ok()) << image.status();
  ASSERT_EQ(image->channels, 3);
  EXPECT_GT(image->pixels[0], 200);
  EXPECT_LT(image->pixels[1], 60);
  EXPECT_LT(image->pixels[2], 60);
}

TEST(ImageDecoderTest, RejectsTruncatedJpegWithReason) {
  const std::string jpeg = test_util::EncodeJpeg(64, 64, 3, 1);
  absl::StatusOr<Image> image = DecodeImage(jpeg.substr(0, jpeg.size() / 2), kLimit);
  ASSERT_TRUE(absl::IsInvalidArgument(image.status())) << image.status();
  EXPECT_THAT(std::string(image.status().message()), HasSubstr("truncated JPEG"));
  EXPECT_THAT(std::string(image.status().message()), HasSubstr("Premature end of JPEG file"));
}

TEST(ImageDecoderTest, RejectsCorruptJpegWithReason) {
  std::string jpeg = test_util::EncodeJpeg(64, 64, 3, 1);
  // Garbage right after the SOI marker, where a marker must follow.
  for (size_t i = 3; i < 40; ++i) jpeg[i] = 0x11;
  absl::StatusOr<Image> image = DecodeImage(jpeg, kLimit);
  ASSERT_TRUE(absl::IsInvalidArgument(image.status())) << image.status();
  EXPECT_THAT(std::string(image.status().message()), StartsWith("corrupt or truncated JPEG: "));
  EXPECT_GT(image.status().message().size(), std::string("corrupt or truncated JPEG: ").size());
}

TEST(ImageDecoderTest, RejectsTruncatedAndCorruptPng) {
  const std::string png = test_util::EncodePng(64, 64, 3, 2);
  absl::StatusOr<Image> truncated = DecodeImage(png.substr(0, png.size() / 2), kLimit);
  ASSERT_TRUE(absl::IsInvalidArgument(truncated.status())) << truncated.status();
  EXPECT_THAT(std::string(truncated.status().message()), HasSubstr("truncated"));

  std::string corrupt = png;
  corrupt[png.size() / 2] ^= 0x5a;  // inside the compressed IDAT data
  absl::StatusOr<Image> image = DecodeImage(corrupt, kLimit);
  ASSERT_TRUE(absl::IsInvalidArgument(image.status())) << image.status();
  // libpng's reason follows ("IDAT: incorrect data check" or a CRC error).
  EXPECT_THAT(std::string(image.status().message()), StartsWith("corrupt or truncated PNG: IDAT"));
}

TEST(ImageDecoderTest, RejectsEmptyAndUnrecognisedBytes) {
  absl::StatusOr<Image> empty = DecodeImage("", kLimit);
  ASSERT_TRUE(absl::IsInvalidArgument(empty.status())) << empty.status();
  EXPECT_THAT(std::string(empty.status().message()), HasSubstr("empty file"));

  absl::StatusOr<Image> text = DecodeImage("hello, world", kLimit);
  ASSERT_TRUE(absl::IsInvalidArgument(text.status())) << text.status();
  EXPECT_THAT(std::string(text.status().message()), HasSubstr("not a JPEG or PNG file"));
}

TEST(ImageDecoderTest, RejectsOversizedImageBeforeDecoding) {
  // 100000 x 100000 RGB would need 30 GB; the header alone must be enough to
  // refuse it.
  absl::StatusOr<Image> image = DecodeImage(PngHeaderOnly(100000, 100000), kLimit);
  ASSERT_TRUE(absl::IsResourceExhausted(image.status())) << image.status();
  EXPECT_EQ(image.status().message(),
            "100000x100000 = 10000000000 pixels exceeds the limit of 25000000");

  // Sides whose product overflows int64 (found by the image_decoder fuzzer):
  // refused from the header, not wrapped below the limit.
  absl::StatusOr<Image> wrapped = DecodeImage(PngHeaderOnly(0xffffffffu, 0xffffffffu), kLimit);
  ASSERT_TRUE(absl::IsResourceExhausted(wrapped.status())) << wrapped.status();
  EXPECT_EQ(wrapped.status().message(),
            "4294967295x4294967295 = 18446744065119617025 pixels exceeds the limit of 25000000");

  absl::StatusOr<Image> jpeg = DecodeImage(test_util::EncodeJpeg(64, 32, 3, 1), 1000);
  ASSERT_TRUE(absl::IsResourceExhausted(jpeg.status())) << jpeg.status();
  EXPECT_EQ(jpeg.status().message(), "64x32 = 2048 pixels exceeds the limit of 1000");

  absl::StatusOr<Image> png = DecodeImage(test_util::EncodePng(64, 32, 3, 1), 1000);
  ASSERT_TRUE(absl::IsResourceExhausted(png.status())) << png.status();

  // Exactly at the limit is fine.
  EXPECT_TRUE(DecodeImage(test_util::EncodePng(40, 25, 3, 1), 1000).ok());
}

TEST(ImageDecoderTest, AppliesEachExifOrientationToTheQuadrants) {
  // Stored: red green / blue white, 64x32. Each row: what the upright image
  // shows in its {top-left, top-right, bottom-left, bottom-right} quadrant.
  const struct {
    int orientation;
    int width, height;
    std::vector<int> quadrants;
  } kCases[] = {
      {1, 64, 32, {kRed, kGreen, kBlue, kWhite}}, {2, 64, 32, {kGreen, kRed, kWhite, kBlue}},
      {3, 64, 32, {kWhite, kBlue, kGreen, kRed}}, {4, 64, 32, {kBlue, kWhite, kRed, kGreen}},
      {5, 32, 64, {kRed, kBlue, kGreen, kWhite}}, {6, 32, 64, {kBlue, kRed, kWhite, kGreen}},
      {7, 32, 64, {kWhite, kGreen, kBlue, kRed}}, {8, 32, 64, {kGreen, kWhite, kRed, kBlue}},
  };
  const std::string jpeg = QuadrantJpeg();
  for (const auto& c : kCases) {
    for (bool big_endian : {false, true}) {
      SCOPED_TRACE(testing::Message()
                   << "orientation " << c.orientation << (big_endian ? " MM" : " II"));
      absl::StatusOr<Image> image =
          DecodeImage(test_util::InsertExifOrientation(jpeg, c.orientation, big_endian), kLimit);
      ASSERT_TRUE(image.ok()) << image.status();
      EXPECT_EQ(image->width, c.width);
      EXPECT_EQ(image->height, c.height);
      ASSERT_EQ(image->pixels.size(), 64u * 32u * 3u);
      EXPECT_THAT(QuadrantColours(*image), ElementsAreArray(c.quadrants));
    }
  }
}

TEST(ImageDecoderTest, ExifOrientationMovesEveryPixelExactly) {
  // The APP1 marker does not change the entropy-coded data, so the stored
  // pixels decode identically and every orientation is an exact permutation.
  for (int channels : {1, 3}) {
    const int w = 13, h = 7;  // odd, unequal sides: a swapped index shows
    const std::string jpeg = test_util::EncodeJpeg(w, h, channels, 5);
    absl::StatusOr<Image> stored = DecodeImage(jpeg, kLimit);
    ASSERT_TRUE(stored.ok()) << stored.status();
    for (int orientation = 2; orientation <= 8; ++orientation) {
      SCOPED_TRACE(testing::Message() << channels << " channels, orientation " << orientation);
      absl::StatusOr<Image> upright =
          DecodeImage(test_util::InsertExifOrientation(jpeg, orientation), kLimit);
      ASSERT_TRUE(upright.ok()) << upright.status();
      const bool swapped = orientation >= 5;
      ASSERT_EQ(upright->width, swapped ? h : w);
      ASSERT_EQ(upright->height, swapped ? w : h);
      ASSERT_EQ(upright->channels, channels);
      ASSERT_EQ(upright->pixels.size(), stored->pixels.size());
      int mismatches = 0;
      for (int y = 0; y < upright->height; ++y) {
        for (int x = 0; x < upright->width; ++x) {
          const auto [sx, sy] = StoredPixelOf(orientation, x, y, w, h);
          for (int ch = 0; ch < channels; ++ch) {
            mismatches +=
                upright->pixels[(static_cast<size_t>(y) * upright->width + x) * channels + ch] !=
                stored->pixels[(static_cast<size_t>(sy) * w + sx) * channels + ch];
          }
        }
      }
      EXPECT_EQ(mismatches, 0);
    }
  }
}

TEST(ImageDecoderTest, InvalidExifLeavesTheImageAsStored) {
  const std::string jpeg = QuadrantJpeg();
  absl::StatusOr<Image> stored = DecodeImage(jpeg, kLimit);
  ASSERT_TRUE(stored.ok()) << stored.status();
  std::string garbage("Exif\0\0", 6);
  for (int i = 0; i < 300; ++i) garbage += static_cast<char>((i * 7919 + 13) & 0xff);
  std::string bad_offset = test_util::ExifOrientationPayload(6);
  bad_offset[10] = '\xf0';  // IFD0 offset far past the end of the block
  const struct {
    const char* what;
    std::string app1;
  } kCases[] = {
      {"orientation 0", test_util::ExifOrientationPayload(0)},
      {"orientation 9", test_util::ExifOrientationPayload(9)},
      {"orientation 0xffff", test_util::ExifOrientationPayload(0xffff)},
      {"garbage after the Exif header", garbage},
      {"IFD0 offset out of bounds", bad_offset},
      {"cut inside IFD0", test_util::ExifOrientationPayload(6).substr(0, 20)},
      {"only the Exif header", std::string("Exif\0\0", 6)},
      {"not EXIF (XMP)", "http://ns.adobe.com/xap/1.0/\0<x:xmpmeta/>"s},
  };
  for (const auto& c : kCases) {
    SCOPED_TRACE(c.what);
    absl::StatusOr<Image> image = DecodeImage(test_util::InsertJpegApp1(jpeg, c.app1), kLimit);
    ASSERT_TRUE(image.ok()) << image.status();
    EXPECT_EQ(image->width, 64);
    EXPECT_EQ(image->height, 32);
    EXPECT_EQ(image->pixels, stored->pixels);
  }
}

TEST(ImageDecoderTest, ReadsExifAfterAnotherApp1Marker) {
  // XMP also lives in APP1; the EXIF block is found whichever comes first.
  const std::string jpeg = test_util::InsertJpegApp1(
      test_util::InsertExifOrientation(QuadrantJpeg(), 3), "http://ns.adobe.com/xap/1.0/\0x"s);
  absl::StatusOr<Image> image = DecodeImage(jpeg, kLimit);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_THAT(QuadrantColours(*image), ElementsAre(kWhite, kBlue, kGreen, kRed));
}

TEST(ImageDecoderTest, ExifOrientationKeepsThePixelLimit) {
  // 64x32 turned is 32x64: the same 2048 pixels, refused or accepted alike.
  const std::string turned = test_util::InsertExifOrientation(QuadrantJpeg(), 6);
  absl::StatusOr<Image> refused = DecodeImage(turned, 2047);
  ASSERT_TRUE(absl::IsResourceExhausted(refused.status())) << refused.status();
  EXPECT_EQ(refused.status().message(), "64x32 = 2048 pixels exceeds the limit of 2047");
  EXPECT_TRUE(DecodeImage(turned, 2048).ok());
}

TEST(ImageDecoderTest, SniffsFormatsByMagicBytes) {
  EXPECT_EQ(SniffImageFormat(test_util::EncodeJpeg(8, 8, 3, 1)), ImageFormat::kJpeg);
  EXPECT_EQ(SniffImageFormat(test_util::EncodePng(8, 8, 3, 1)), ImageFormat::kPng);
  EXPECT_EQ(SniffImageFormat("GIF89a\x01\x00"), ImageFormat::kGif);
  EXPECT_EQ(SniffImageFormat("GIF87a"), ImageFormat::kGif);
  EXPECT_EQ(SniffImageFormat("BM\x36\x00\x00\x00"), ImageFormat::kBmp);
  EXPECT_EQ(SniffImageFormat("RIFF\x10\x00\x00\x00WEBPVP8 "s), ImageFormat::kWebp);
  EXPECT_EQ(SniffImageFormat(std::string("II*\0\x08\0\0\0", 8)), ImageFormat::kTiff);
  EXPECT_EQ(SniffImageFormat(std::string("MM\0*\0\0\0\x08", 8)), ImageFormat::kTiff);
  EXPECT_EQ(SniffImageFormat("RIFF\x10\x00\x00\x00WAVEfmt "s), ImageFormat::kUnknown);
  EXPECT_EQ(SniffImageFormat(""), ImageFormat::kUnknown);
}

TEST(ImageDecoderTest, RejectsRecognisedButUnsupportedFormats) {
  absl::StatusOr<Image> gif = DecodeImage("GIF89a\x01\x00\x01\x00", kLimit);
  ASSERT_TRUE(absl::IsFailedPrecondition(gif.status())) << gif.status();
  EXPECT_EQ(gif.status().message(), "unsupported image format GIF; supported: JPEG, PNG");
  EXPECT_THAT(std::string(DecodeImage("BM\x36\x00\x00\x00"s, kLimit).status().message()),
              HasSubstr("BMP"));
  EXPECT_THAT(std::string(DecodeImage("RIFF\x10\x00\x00\x00WEBPVP8 "s, kLimit).status().message()),
              HasSubstr("WebP"));
}

}  // namespace
}  // namespace kaizen::datasets
