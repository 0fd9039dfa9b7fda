#include "server/datasets/image_encoder.h"

#include <jpeglib.h>
#include <png.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"

namespace kaizen::datasets {
namespace {

// The source pixels one output pixel averages along one axis, with weights
// that sum to 1.
struct Taps {
  int64_t first = 0;
  std::vector<float> weights;
};

// For each of `out` output pixels over `in` source pixels (out <= in), the
// source interval [o * s, (o + 1) * s) with s = in / out, each source pixel
// weighted by how much of it lies inside.
std::vector<Taps> AreaTaps(int64_t in, int64_t out) {
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  std::vector<Taps> taps(static_cast<size_t>(out));
  for (int64_t o = 0; o < out; ++o) {
    const double begin = static_cast<double>(o) * scale;
    const double end = std::min(static_cast<double>(in), static_cast<double>(o + 1) * scale);
    const auto first = static_cast<int64_t>(std::floor(begin));
    const auto last = std::min(in, static_cast<int64_t>(std::ceil(end)));
    Taps& t = taps[static_cast<size_t>(o)];
    t.first = first;
    for (int64_t i = first; i < last; ++i) {
      const double covered =
          std::min(end, static_cast<double>(i + 1)) - std::max(begin, static_cast<double>(i));
      t.weights.push_back(static_cast<float>(std::max(0.0, covered) / (end - begin)));
    }
  }
  return taps;
}

bool Encodable(const Image& image) {
  return (image.channels == 1 || image.channels == 3) && image.height > 0 && image.width > 0 &&
         image.pixels.size() == static_cast<size_t>(image.height) *
                                    static_cast<size_t>(image.width) *
                                    static_cast<size_t>(image.channels);
}

absl::Status NotEncodable(const Image& image, absl::string_view format) {
  return absl::InvalidArgumentError(absl::StrCat("cannot encode a ", image.height, "x", image.width,
                                                 "x", image.channels, " image of ",
                                                 image.pixels.size(), " bytes as ", format));
}

struct JpegEncodeError {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void JpegEncodeErrorExit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegEncodeError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// Owns libjpeg's state and its output buffer on every path, including a
// longjmp out of libjpeg.
struct JpegEncoder {
  jpeg_compress_struct cinfo;
  JpegEncodeError err;
  unsigned char* buffer = nullptr;
  unsigned long size = 0;  // NOLINT(runtime/int): libjpeg's type
  bool created = false;
  ~JpegEncoder() {
    if (created) jpeg_destroy_compress(&cinfo);
    std::free(buffer);
  }
};

// Holds the setjmp; only trivially destructible locals, so a longjmp out of
// libjpeg skips no destructor.
bool RunJpegEncode(JpegEncoder* e, const Image& image, int quality) {
  e->cinfo.err = jpeg_std_error(&e->err.pub);
  e->err.pub.error_exit = JpegEncodeErrorExit;
  if (setjmp(e->err.jump)) return false;
  jpeg_create_compress(&e->cinfo);
  e->created = true;
  jpeg_mem_dest(&e->cinfo, &e->buffer, &e->size);
  e->cinfo.image_width = static_cast<JDIMENSION>(image.width);
  e->cinfo.image_height = static_cast<JDIMENSION>(image.height);
  e->cinfo.input_components = image.channels;
  e->cinfo.in_color_space = image.channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&e->cinfo);
  jpeg_set_quality(&e->cinfo, quality, TRUE);
  jpeg_start_compress(&e->cinfo, TRUE);
  const size_t stride = static_cast<size_t>(image.width) * static_cast<size_t>(image.channels);
  while (e->cinfo.next_scanline < e->cinfo.image_height) {
    // libjpeg takes a non-const row pointer but does not write through it.
    auto* row = const_cast<JSAMPLE*>(image.pixels.data() + e->cinfo.next_scanline * stride);
    jpeg_write_scanlines(&e->cinfo, &row, 1);
  }
  jpeg_finish_compress(&e->cinfo);
  return true;
}

}  // namespace

ImageSize CappedSize(int32_t height, int32_t width, int32_t shorter_side) {
  const int32_t shorter = std::min(height, width);
  if (shorter_side <= 0 || shorter <= shorter_side) return {height, width};
  const double scale = static_cast<double>(shorter_side) / static_cast<double>(shorter);
  auto scaled = [&](int32_t side) {
    return std::max<int32_t>(1, static_cast<int32_t>(std::lround(side * scale)));
  };
  return height <= width ? ImageSize{shorter_side, std::min(width, scaled(width))}
                         : ImageSize{std::min(height, scaled(height)), shorter_side};
}

Image AreaDownscale(const Image& image, int32_t height, int32_t width) {
  const int64_t c = image.channels, w = image.width;
  Image out;
  out.height = std::clamp(height, 1, image.height);
  out.width = std::clamp(width, 1, image.width);
  out.channels = image.channels;
  out.pixels.resize(static_cast<size_t>(out.height) * static_cast<size_t>(out.width) *
                    static_cast<size_t>(c));
  const std::vector<Taps> rows = AreaTaps(image.height, out.height);
  const std::vector<Taps> cols = AreaTaps(image.width, out.width);
  std::vector<float> acc(static_cast<size_t>(w * c));
  uint8_t* dst = out.pixels.data();
  for (const Taps& row : rows) {
    // The output row's source rows, averaged into one row of floats ...
    std::fill(acc.begin(), acc.end(), 0.0F);
    for (size_t k = 0; k < row.weights.size(); ++k) {
      const uint8_t* src = image.pixels.data() + (row.first + static_cast<int64_t>(k)) * w * c;
      const float weight = row.weights[k];
      for (int64_t i = 0; i < w * c; ++i) acc[static_cast<size_t>(i)] += weight * src[i];
    }
    // ... and that row averaged along its columns.
    for (const Taps& col : cols) {
      for (int64_t ch = 0; ch < c; ++ch) {
        float sum = 0.0F;
        for (size_t k = 0; k < col.weights.size(); ++k) {
          sum += col.weights[k] *
                 acc[static_cast<size_t>((col.first + static_cast<int64_t>(k)) * c + ch)];
        }
        *dst++ = static_cast<uint8_t>(std::clamp(std::lround(sum), 0L, 255L));
      }
    }
  }
  return out;
}

absl::StatusOr<std::string> EncodeJpeg(const Image& image, int quality) {
  if (!Encodable(image)) return NotEncodable(image, "JPEG");
  if (image.height > JPEG_MAX_DIMENSION || image.width > JPEG_MAX_DIMENSION) {
    return NotEncodable(image, "JPEG (sides up to 65500)");
  }
  if (quality < 1 || quality > 100) {
    return absl::InvalidArgumentError(absl::StrCat("JPEG quality ", quality, " is not in 1..100"));
  }
  JpegEncoder encoder;
  if (!RunJpegEncode(&encoder, image, quality)) {
    return absl::InternalError(absl::StrCat("JPEG encoding failed: ", encoder.err.message));
  }
  return std::string(reinterpret_cast<const char*>(encoder.buffer), encoder.size);
}

absl::StatusOr<std::string> EncodePng(const Image& image) {
  if (!Encodable(image)) return NotEncodable(image, "PNG");
  png_image png;
  std::memset(&png, 0, sizeof(png));
  png.version = PNG_IMAGE_VERSION;
  png.width = static_cast<png_uint_32>(image.width);
  png.height = static_cast<png_uint_32>(image.height);
  png.format = image.channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  // The first call sizes the output, the second writes it.
  png_alloc_size_t size = 0;
  if (png_image_write_to_memory(&png, nullptr, &size, 0, image.pixels.data(), 0, nullptr) == 0) {
    const std::string message = png.message;
    png_image_free(&png);
    return absl::InternalError(absl::StrCat("PNG encoding failed: ", message));
  }
  std::string out(size, '\0');
  if (png_image_write_to_memory(&png, out.data(), &size, 0, image.pixels.data(), 0, nullptr) == 0) {
    const std::string message = png.message;
    png_image_free(&png);
    return absl::InternalError(absl::StrCat("PNG encoding failed: ", message));
  }
  out.resize(size);
  return out;
}

}  // namespace kaizen::datasets
