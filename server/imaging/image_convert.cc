#include "server/imaging/image_convert.h"

#include <torch/torch.h>

#include <cstring>
#include <vector>

namespace kaizen::imaging {
namespace {

// One record as float [C, H, W] at the target shape, values in [0, 255].
torch::Tensor ConvertRecord(const uint8_t* pixels, int64_t h, int64_t w, int64_t c, int64_t out_c,
                            int64_t out_h, int64_t out_w) {
  torch::Tensor t = torch::from_blob(const_cast<uint8_t*>(pixels), {h, w, c}, torch::kUInt8)
                        .permute({2, 0, 1})
                        .to(torch::kFloat);
  if (c == 4 || c == 2) t = t.narrow(0, 0, c - 1);  // drop alpha
  const int64_t have = t.size(0);
  if (have == 1 && out_c > 1) {
    t = t.expand({out_c, h, w}).contiguous();  // written in place below
  } else if (have == 3 && out_c == 1) {
    t = (0.299 * t[0] + 0.587 * t[1] + 0.114 * t[2]).unsqueeze(0);
  }
  if (h != out_h || w != out_w) {
    namespace F = torch::nn::functional;
    t = F::interpolate(t.unsqueeze(0), F::InterpolateFuncOptions()
                                           .size(std::vector<int64_t>{out_h, out_w})
                                           .mode(torch::kBilinear)
                                           .align_corners(false))
            .squeeze(0);
  }
  return t.round_().clamp_(0, 255);
}

}  // namespace

void ConvertImage(const uint8_t* src, int64_t h, int64_t w, int64_t c, int64_t C, int64_t H,
                  int64_t W, uint8_t* dst) {
  const int64_t plane = H * W;
  if (h == H && w == W && c == C) {
    if (C == 1) {
      std::memcpy(dst, src, plane);
    } else {
      for (int64_t p = 0; p < plane; ++p) {
        for (int64_t ch = 0; ch < C; ++ch) dst[ch * plane + p] = src[p * C + ch];
      }
    }
    return;
  }
  torch::Tensor converted = ConvertRecord(src, h, w, c, C, H, W).to(torch::kUInt8).contiguous();
  std::memcpy(dst, converted.data_ptr<uint8_t>(), C * plane);
}

}  // namespace kaizen::imaging
