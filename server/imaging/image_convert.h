// Image conversion shared by training and serving, so that a served image is
// prepared exactly as the training images were: one decoded image converted
// to a model's input size and channel count.
#pragma once

#include <cstdint>

namespace kaizen::imaging {

// Converts one row-major HWC image with `c` (1-4) channels to uint8
// [C, H, W] at `dst`: bilinear resize when the size differs, 1 -> 3 channels
// by repeating, 3 -> 1 by luminance (ITU-R 601), an alpha channel dropped.
void ConvertImage(const uint8_t* src, int64_t h, int64_t w, int64_t c, int64_t C, int64_t H,
                  int64_t W, uint8_t* dst);

}  // namespace kaizen::imaging
