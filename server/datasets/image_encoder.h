// The stored-resolution cap (issue 17): an upload may store an image whose
// shorter side passes a limit downscaled and encoded again, so that a
// collection of large photos costs the disk and each epoch's decode only
// what training will use. Also the encoders that do it: libjpeg-turbo for
// JPEG and libpng's simplified API for PNG.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "server/datasets/image_decoder.h"

namespace kaizen::datasets {

// The size an image of `height` x `width` has with its shorter side at
// `shorter_side` and its aspect ratio kept (the longer side rounded, never
// below 1). An image whose shorter side is not longer keeps its size.
struct ImageSize {
  int32_t height = 0;
  int32_t width = 0;
};
ImageSize CappedSize(int32_t height, int32_t width, int32_t shorter_side);

// `image` scaled down to `height` x `width` (each no larger than the
// image's) by area averaging: every output pixel is the mean of the source
// area it covers, partial pixels weighted by their share, so that no detail
// aliases however large the factor. Rows are filtered one output row at a
// time; memory beyond the result is one source row of floats.
Image AreaDownscale(const Image& image, int32_t height, int32_t width);

// `image` (1 or 3 channels) as a baseline JPEG of `quality` (1..100) with
// 4:2:0 chroma, or as a PNG. InvalidArgument for a shape they cannot hold.
absl::StatusOr<std::string> EncodeJpeg(const Image& image, int quality);
absl::StatusOr<std::string> EncodePng(const Image& image);

}  // namespace kaizen::datasets
