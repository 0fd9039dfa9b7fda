// Decodes uploaded JPEG and PNG files into 8-bit grey or RGB pixels, upright
// as EXIF says, with the image size checked against a limit before any pixel
// is decoded so that a small file claiming a huge image (a decompression bomb)
// costs nothing. Training ingest and serving both decode through here.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/datasets/decode_budget.h"

namespace kaizen::datasets {

// A decoded image, row-major HWC; `channels` is 1 (grey) or 3 (RGB).
struct Image {
  int32_t height = 0;
  int32_t width = 0;
  int32_t channels = 0;
  std::vector<uint8_t> pixels;
};

// What one decode may cost.
struct DecodeLimits {
  // Largest image accepted, width * height.
  int64_t max_pixels = 25'000'000;
  // Most scans in a progressive JPEG. Each scan is another pass over the
  // whole image, so a small file with thousands of scans costs minutes of CPU;
  // real encoders write about 10.
  int max_jpeg_scans = 100;
  // When set, charged with the bytes the decode allocates (pixels, and a
  // progressive JPEG's coefficients) before it allocates them.
  DecodeBudget* budget = nullptr;
};

enum class ImageFormat { kUnknown, kJpeg, kPng, kGif, kBmp, kWebp, kTiff };

// Recognises a format by its magic bytes (never by file name).
ImageFormat SniffImageFormat(absl::string_view bytes);

// "JPEG", "PNG", "GIF", ...; "unknown" for kUnknown.
absl::string_view ImageFormatName(ImageFormat format);

// Decodes a JPEG (libjpeg-turbo) or PNG (libpng): alpha is dropped, palettes
// expanded, 16-bit samples stripped to 8, CMYK/YCCK converted to RGB. A JPEG's
// EXIF Orientation tag (libexif) is applied after decoding, so a phone photo
// comes out upright: 2..8 mirror, turn or transpose the pixels (5..8 swap
// width and height; the pixel count, and so the limits, are unchanged). EXIF
// that cannot be parsed, or an orientation outside 1..8, leaves the image as
// stored and is never an error. PNG's optional eXIf chunk is not read.
// Errors:
//   InvalidArgument     - empty, unrecognised, corrupt or truncated data; the
//                         message says why (libjpeg's / libpng's words).
//   FailedPrecondition  - a recognised but unsupported format (GIF, BMP, WebP,
//                         TIFF): "unsupported image format GIF; supported: JPEG, PNG".
//   ResourceExhausted   - width * height > max_pixels, detected from the
//                         header: "9000x9000 = 81000000 pixels exceeds the
//                         limit of 25000000" (width x height); a progressive
//                         JPEG with more than max_jpeg_scans scans (stopped
//                         when the scan after the limit starts); or the budget
//                         cannot pay for the decode (budget->exhausted() says
//                         which).
absl::StatusOr<Image> DecodeImage(absl::string_view bytes, const DecodeLimits& limits);

// The same with only a pixel limit (and the default scan limit, no budget).
absl::StatusOr<Image> DecodeImage(absl::string_view bytes, int64_t max_pixels);

}  // namespace kaizen::datasets
