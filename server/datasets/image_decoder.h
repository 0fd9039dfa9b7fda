// Decodes uploaded JPEG and PNG files into 8-bit grey or RGB pixels, with the
// image size checked against a limit before any pixel is decoded so that a
// small file claiming a huge image (a decompression bomb) costs nothing.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kaizen::datasets {

// A decoded image, row-major HWC; `channels` is 1 (grey) or 3 (RGB).
struct Image {
  int32_t height = 0;
  int32_t width = 0;
  int32_t channels = 0;
  std::vector<uint8_t> pixels;
};

enum class ImageFormat { kUnknown, kJpeg, kPng, kGif, kBmp, kWebp, kTiff };

// Recognises a format by its magic bytes (never by file name).
ImageFormat SniffImageFormat(absl::string_view bytes);

// "JPEG", "PNG", "GIF", ...; "unknown" for kUnknown.
absl::string_view ImageFormatName(ImageFormat format);

// Decodes a JPEG (libjpeg-turbo) or PNG (libpng): alpha is dropped, palettes
// expanded, 16-bit samples stripped to 8, CMYK/YCCK converted to RGB.
// Errors:
//   InvalidArgument     - empty, unrecognised, corrupt or truncated data; the
//                         message says why (libjpeg's / libpng's words).
//   FailedPrecondition  - a recognised but unsupported format (GIF, BMP, WebP,
//                         TIFF): "unsupported image format GIF; supported: JPEG, PNG".
//   ResourceExhausted   - width * height > max_pixels, detected from the
//                         header: "9000x9000 = 81000000 pixels exceeds the
//                         limit of 25000000" (width x height).
absl::StatusOr<Image> DecodeImage(absl::string_view bytes, int64_t max_pixels);

}  // namespace kaizen::datasets
