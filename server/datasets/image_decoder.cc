#include "server/datasets/image_decoder.h"

// clang-format off
#include <cstdio>  // jpeglib.h needs FILE and size_t first
#include <jpeglib.h>
#include <jerror.h>
// clang-format on
#include <libexif/exif-data.h>
#include <png.h>

#include <algorithm>
#include <csetjmp>
#include <cstddef>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kaizen::datasets {
namespace {

// Outcome of the setjmp-guarded decode loops below.
enum class DecodeOutcome { kOk, kFailed, kTooLarge, kTooManyScans, kOverBudget };

// Sides are at most 2^32 - 1 (PNG's field), so their product fits in uint64.
absl::Status TooLargeError(int64_t width, int64_t height, int64_t max_pixels) {
  const uint64_t pixels = static_cast<uint64_t>(width) * static_cast<uint64_t>(height);
  return absl::ResourceExhaustedError(
      absl::StrCat(width, "x", height, " = ", pixels, " pixels exceeds the limit of ", max_pixels));
}

absl::Status TooManyScansError(int max_scans) {
  return absl::ResourceExhaustedError(
      absl::StrCat("progressive JPEG has more than ", max_scans,
                   " scans (the limit; real encoders write about 10); decoding was stopped"));
}

// Charges `budget` (if any) for `bytes` of `format` output; the error, if
// any, is kept in `*status` because the callers hold a setjmp.
bool ChargeBudget(DecodeBudget* budget, int64_t bytes, absl::string_view format, int64_t width,
                  int64_t height, absl::Status* status) {
  if (budget == nullptr) return true;
  *status = budget->Charge(bytes, absl::StrCat(format, " of ", width, "x", height));
  return status->ok();
}

uint32_t ReadBigEndian32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// ---------------------------------------------------------------------------
// EXIF orientation. Phones store pixels as the sensor saw them and record in
// the EXIF Orientation tag how to turn them upright; the decoder applies it so
// that training and serving both see the photo as it is shown.

constexpr int kJpegApp1 = JPEG_APP0 + 1;
constexpr char kExifHeader[] = "Exif\0\0";  // 6 bytes, then a TIFF structure
constexpr size_t kExifHeaderSize = 6;

// The Orientation of one EXIF APP1 payload ("Exif\0\0" + TIFF), parsed by
// libexif; 1 (as stored) when the block cannot be parsed, has no Orientation
// or holds a value outside 1..8. The payload is at most 64 KiB (a JPEG
// marker's length field), which bounds libexif's work.
int ExifOrientation(const unsigned char* data, size_t size) {
  ExifData* exif = exif_data_new();
  if (exif == nullptr) return 1;
  // Only read: no "fixing" of the data to the specification (which adds
  // entries), and tags libexif does not know are skipped.
  exif_data_unset_option(exif, EXIF_DATA_OPTION_FOLLOW_SPECIFICATION);
  exif_data_load_data(exif, data, static_cast<unsigned int>(size));
  int orientation = 1;
  ExifEntry* entry = exif_content_get_entry(exif->ifd[EXIF_IFD_0], EXIF_TAG_ORIENTATION);
  if (entry != nullptr && entry->format == EXIF_FORMAT_SHORT && entry->components >= 1 &&
      entry->data != nullptr && entry->size >= 2) {
    const int value = exif_get_short(entry->data, exif_data_get_byte_order(exif));
    if (value >= 1 && value <= 8) orientation = value;
  }
  exif_data_unref(exif);
  return orientation;
}

// The Orientation of the first EXIF APP1 marker libjpeg saved (1 if none).
int JpegOrientation(const jpeg_decompress_struct& cinfo) {
  for (jpeg_saved_marker_ptr m = cinfo.marker_list; m != nullptr; m = m->next) {
    if (m->marker != kJpegApp1 || m->data_length < kExifHeaderSize ||
        std::memcmp(m->data, kExifHeader, kExifHeaderSize) != 0) {
      continue;
    }
    return ExifOrientation(m->data, m->data_length);
  }
  return 1;
}

// Turns `image` upright for EXIF `orientation` (2..8; 1 leaves it as is): a
// mirror (2), 180-degree turn (3), flip (4), transpose (5), quarter turn
// clockwise (6), transverse (7) or quarter turn anticlockwise (8). 5..8 swap
// width and height; the pixel count is unchanged. The copy it makes is freed
// before the decode returns, like libjpeg's own working memory.
void ApplyOrientation(int orientation, Image* image) {
  if (orientation < 2 || orientation > 8) return;
  const ptrdiff_t w = image->width;
  const ptrdiff_t h = image->height;
  const ptrdiff_t col = image->channels;
  const ptrdiff_t row = w * col;
  // Where the output's top-left pixel comes from in the stored pixels, and
  // the steps there for one output column and one output row.
  struct Walk {
    ptrdiff_t start, step_x, step_y;
  };
  Walk walk = {0, col, row};
  switch (orientation) {
    case 2:
      walk = {(w - 1) * col, -col, row};
      break;
    case 3:
      walk = {(h - 1) * row + (w - 1) * col, -col, -row};
      break;
    case 4:
      walk = {(h - 1) * row, col, -row};
      break;
    case 5:
      walk = {0, row, col};
      break;
    case 6:
      walk = {(h - 1) * row, -row, col};
      break;
    case 7:
      walk = {(h - 1) * row + (w - 1) * col, -row, -col};
      break;
    case 8:
      walk = {(w - 1) * col, row, -col};
      break;
  }
  const bool swap = orientation >= 5;
  const ptrdiff_t out_w = swap ? h : w;
  const ptrdiff_t out_h = swap ? w : h;
  std::vector<uint8_t> out(image->pixels.size());
  uint8_t* dst = out.data();
  const uint8_t* src = image->pixels.data();
  for (ptrdiff_t y = 0; y < out_h; ++y) {
    ptrdiff_t at = walk.start + y * walk.step_y;  // an index: it may step past either end
    for (ptrdiff_t x = 0; x < out_w; ++x, at += walk.step_x) {
      for (ptrdiff_t c = 0; c < col; ++c) *dst++ = src[at + c];
    }
  }
  image->pixels.swap(out);
  image->width = static_cast<int32_t>(out_w);
  image->height = static_cast<int32_t>(out_h);
}

// ---------------------------------------------------------------------------
// JPEG. libjpeg reports fatal errors through error_exit, which by default
// calls exit(); ours longjmps back to the decode function instead.

struct JpegErrorManager {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  bool truncated;
};

// Stops a progressive JPEG once it starts more scans than allowed, the way
// djpeg's -maxscans does: libjpeg calls the monitor between scans (and rows)
// while jpeg_start_decompress consumes a multi-scan file.
struct JpegProgress {
  jpeg_progress_mgr pub;
  int max_scans;
  bool too_many_scans;
  JpegErrorManager* err;
};

void JpegProgressMonitor(j_common_ptr cinfo) {
  if (!cinfo->is_decompressor) return;
  auto* progress = reinterpret_cast<JpegProgress*>(cinfo->progress);
  if (reinterpret_cast<j_decompress_ptr>(cinfo)->input_scan_number > progress->max_scans) {
    progress->too_many_scans = true;
    std::longjmp(progress->err->jump, 1);
  }
}

void JpegErrorExit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

void JpegEmitMessage(j_common_ptr cinfo, int msg_level) {
  if (msg_level >= 0) return;  // trace output
  auto* err = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  // On premature end of data libjpeg only warns and pads the image with grey;
  // a half-grey training image is worse than a reported failure.
  if (cinfo->err->msg_code == JWRN_JPEG_EOF) {
    (*cinfo->err->format_message)(cinfo, err->message);
    err->truncated = true;
    std::longjmp(err->jump, 1);
  }
  // Other warnings ("extraneous bytes before marker" and the like) are common
  // in real photos that still decode fine, so they are tolerated.
  cinfo->err->num_warnings++;
}

// Owns the libjpeg state so that it is released on every path, including a
// longjmp out of libjpeg.
struct JpegDecoder {
  jpeg_decompress_struct cinfo;
  JpegErrorManager err;
  JpegProgress progress;
  absl::Status budget_status;
  // The EXIF Orientation tag (1..8), read while the APP1 markers are held.
  int orientation = 1;
  bool created = false;
  ~JpegDecoder() {
    if (created) jpeg_destroy_decompress(&cinfo);
  }
};

// Chooses libjpeg's output colour space and the image's channels; returns
// whether the output is CMYK, which the caller converts to RGB.
bool SelectJpegOutput(jpeg_decompress_struct* cinfo, Image* image) {
  switch (cinfo->jpeg_color_space) {
    case JCS_GRAYSCALE:
      cinfo->out_color_space = JCS_GRAYSCALE;
      image->channels = 1;
      return false;
    case JCS_CMYK:
    case JCS_YCCK:
      // libjpeg converts YCCK to CMYK but not CMYK to RGB.
      cinfo->out_color_space = JCS_CMYK;
      image->channels = 3;
      return true;
    default:
      cinfo->out_color_space = JCS_RGB;
      image->channels = 3;
      return false;
  }
}

// Holds the setjmp; it has only trivially destructible locals, so a longjmp
// from libjpeg into it skips no C++ destructor.
DecodeOutcome DecodeJpegGuarded(JpegDecoder* d, const unsigned char* data, size_t size,
                                const DecodeLimits& limits, Image* image) {
  d->cinfo.err = jpeg_std_error(&d->err.pub);
  d->err.pub.error_exit = JpegErrorExit;
  d->err.pub.emit_message = JpegEmitMessage;
  d->err.message[0] = '\0';
  d->err.truncated = false;
  d->progress.pub.progress_monitor = JpegProgressMonitor;
  d->progress.max_scans = limits.max_jpeg_scans;
  d->progress.too_many_scans = false;
  d->progress.err = &d->err;
  if (setjmp(d->err.jump)) {
    return d->progress.too_many_scans ? DecodeOutcome::kTooManyScans : DecodeOutcome::kFailed;
  }
  jpeg_create_decompress(&d->cinfo);
  d->created = true;
  d->cinfo.progress = &d->progress.pub;
  jpeg_mem_src(&d->cinfo, data, static_cast<unsigned long>(size));
  // Keeps APP1 (EXIF) payloads, up to a marker's 64 KiB, for the orientation.
  jpeg_save_markers(&d->cinfo, kJpegApp1, 0xFFFF);
  jpeg_read_header(&d->cinfo, TRUE);
  // Saved markers live in libjpeg's image pool, freed by the decode; read now.
  d->orientation = JpegOrientation(d->cinfo);

  const int64_t width = d->cinfo.image_width;
  const int64_t height = d->cinfo.image_height;
  image->width = static_cast<int32_t>(width);
  image->height = static_cast<int32_t>(height);
  if (width * height > limits.max_pixels) return DecodeOutcome::kTooLarge;

  const bool cmyk = SelectJpegOutput(&d->cinfo, image);
  // Output pixels (4 components while converting CMYK), plus the whole-image
  // coefficient buffer a progressive JPEG keeps (2 bytes per coefficient per
  // component), charged before jpeg_start_decompress allocates and reads all
  // scans. Fits in int64: width and height are below 2^16.
  int64_t cost = width * height * (cmyk ? 4 : image->channels);
  if (d->cinfo.progressive_mode) cost += width * height * 2 * d->cinfo.num_components;
  if (!ChargeBudget(limits.budget, cost, "JPEG", width, height, &d->budget_status)) {
    return DecodeOutcome::kOverBudget;
  }
  jpeg_start_decompress(&d->cinfo);
  const int out_components = d->cinfo.output_components;
  if (out_components != (cmyk ? 4 : image->channels)) {
    std::snprintf(d->err.message, sizeof(d->err.message),
                  "unexpected number of output components %d", out_components);
    return DecodeOutcome::kFailed;
  }
  const size_t row_bytes = static_cast<size_t>(width) * image->channels;
  image->pixels.resize(row_bytes * static_cast<size_t>(height));
  JSAMPARRAY cmyk_row = nullptr;
  if (cmyk) {
    // Allocated from libjpeg's pool, so jpeg_destroy_decompress frees it.
    cmyk_row = (*d->cinfo.mem->alloc_sarray)(reinterpret_cast<j_common_ptr>(&d->cinfo), JPOOL_IMAGE,
                                             static_cast<JDIMENSION>(width * 4), 1);
  }
  const bool adobe_inverted = d->cinfo.saw_Adobe_marker;
  while (d->cinfo.output_scanline < d->cinfo.output_height) {
    uint8_t* out = image->pixels.data() + row_bytes * d->cinfo.output_scanline;
    if (!cmyk) {
      JSAMPROW row = out;
      jpeg_read_scanlines(&d->cinfo, &row, 1);
      continue;
    }
    jpeg_read_scanlines(&d->cinfo, cmyk_row, 1);
    const uint8_t* in = cmyk_row[0];
    for (int64_t x = 0; x < width; ++x, in += 4, out += 3) {
      // Adobe writes CMYK inverted (0 = full ink), which most CMYK JPEGs are.
      const int c = adobe_inverted ? in[0] : 255 - in[0];
      const int m = adobe_inverted ? in[1] : 255 - in[1];
      const int y = adobe_inverted ? in[2] : 255 - in[2];
      const int k = adobe_inverted ? in[3] : 255 - in[3];
      out[0] = static_cast<uint8_t>(c * k / 255);
      out[1] = static_cast<uint8_t>(m * k / 255);
      out[2] = static_cast<uint8_t>(y * k / 255);
    }
  }
  jpeg_finish_decompress(&d->cinfo);
  return DecodeOutcome::kOk;
}

absl::StatusOr<Image> DecodeJpeg(absl::string_view bytes, const DecodeLimits& limits) {
  JpegDecoder decoder;
  Image image;
  switch (DecodeJpegGuarded(&decoder, reinterpret_cast<const unsigned char*>(bytes.data()),
                            bytes.size(), limits, &image)) {
    case DecodeOutcome::kOk:
      ApplyOrientation(decoder.orientation, &image);
      return image;
    case DecodeOutcome::kTooLarge:
      return TooLargeError(image.width, image.height, limits.max_pixels);
    case DecodeOutcome::kTooManyScans:
      return TooManyScansError(limits.max_jpeg_scans);
    case DecodeOutcome::kOverBudget:
      return decoder.budget_status;
    case DecodeOutcome::kFailed:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(decoder.err.truncated ? "truncated JPEG: " : "corrupt or truncated JPEG: ",
                   decoder.err.message));
}

// ---------------------------------------------------------------------------
// PNG. libpng's error callback must not return; ours longjmps to the setjmp
// in DecodePngGuarded.

struct PngDecoder {
  png_structp png = nullptr;
  png_infop info = nullptr;
  const unsigned char* data = nullptr;
  size_t size = 0;
  size_t pos = 0;
  char message[256] = {};
  absl::Status budget_status;
  ~PngDecoder() {
    if (png != nullptr) png_destroy_read_struct(&png, info != nullptr ? &info : nullptr, nullptr);
  }
};

void PngError(png_structp png, png_const_charp message) {
  auto* d = static_cast<PngDecoder*>(png_get_error_ptr(png));
  std::snprintf(d->message, sizeof(d->message), "%s", message);
  png_longjmp(png, 1);
}

void PngWarning(png_structp, png_const_charp) {}

void PngRead(png_structp png, png_bytep out, png_size_t length) {
  auto* d = static_cast<PngDecoder*>(png_get_io_ptr(png));
  if (d->size - d->pos < length) png_error(png, "unexpected end of data (the file is truncated)");
  std::memcpy(out, d->data + d->pos, length);
  d->pos += length;
}

DecodeOutcome DecodePngGuarded(PngDecoder* d, const DecodeLimits& limits, Image* image) {
  d->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, d, PngError, PngWarning);
  if (d->png == nullptr) {
    std::snprintf(d->message, sizeof(d->message), "cannot create a PNG reader");
    return DecodeOutcome::kFailed;
  }
  d->info = png_create_info_struct(d->png);
  if (d->info == nullptr) {
    std::snprintf(d->message, sizeof(d->message), "cannot create a PNG info struct");
    return DecodeOutcome::kFailed;
  }
  if (setjmp(png_jmpbuf(d->png))) return DecodeOutcome::kFailed;
  png_set_read_fn(d->png, d, PngRead);
  // Our own pixel limit is the one that applies; libpng's default of 1e6 per
  // side would otherwise reject some images with a less useful message.
  png_set_user_limits(d->png, 0x7fffffff, 0x7fffffff);
  png_read_info(d->png, d->info);

  const int64_t width = png_get_image_width(d->png, d->info);
  const int64_t height = png_get_image_height(d->png, d->info);
  image->width = static_cast<int32_t>(width);
  image->height = static_cast<int32_t>(height);
  if (width * height > limits.max_pixels) return DecodeOutcome::kTooLarge;

  const int color_type = png_get_color_type(d->png, d->info);
  const int bit_depth = png_get_bit_depth(d->png, d->info);
  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(d->png);
  if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(d->png);
  if (bit_depth == 16) png_set_strip_16(d->png);
  // Transparency as an alpha channel, or as a tRNS chunk (which expanding a
  // palette turns into one), is dropped.
  if ((color_type & PNG_COLOR_MASK_ALPHA) != 0 ||
      png_get_valid(d->png, d->info, PNG_INFO_tRNS) != 0) {
    png_set_strip_alpha(d->png);
  }
  const int passes = png_set_interlace_handling(d->png);
  png_read_update_info(d->png, d->info);

  image->channels = png_get_channels(d->png, d->info);
  const size_t row_bytes = png_get_rowbytes(d->png, d->info);
  if ((image->channels != 1 && image->channels != 3) ||
      row_bytes != static_cast<size_t>(width) * image->channels) {
    std::snprintf(d->message, sizeof(d->message), "unexpected PNG layout (%d channels)",
                  image->channels);
    return DecodeOutcome::kFailed;
  }
  if (!ChargeBudget(limits.budget, static_cast<int64_t>(row_bytes) * height, "PNG", width, height,
                    &d->budget_status)) {
    return DecodeOutcome::kOverBudget;
  }
  image->pixels.resize(row_bytes * static_cast<size_t>(height));
  // Interlaced images are assembled over several passes on the same rows.
  for (int pass = 0; pass < passes; ++pass) {
    for (int64_t y = 0; y < height; ++y) {
      png_read_row(d->png, image->pixels.data() + row_bytes * y, nullptr);
    }
  }
  png_read_end(d->png, nullptr);
  return DecodeOutcome::kOk;
}

absl::StatusOr<Image> DecodePng(absl::string_view bytes, const DecodeLimits& limits) {
  const int64_t max_pixels = limits.max_pixels;
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  // IHDR must be the first chunk; checking its size here rejects a bomb even
  // when the rest of the file is missing.
  if (bytes.size() >= 24 && std::memcmp(data + 12, "IHDR", 4) == 0) {
    // In uint64: two 32-bit sides can overflow int64 (and wrap below the
    // limit).
    const uint64_t width = ReadBigEndian32(data + 16);
    const uint64_t height = ReadBigEndian32(data + 20);
    if (width * height > static_cast<uint64_t>(std::max<int64_t>(0, max_pixels))) {
      return TooLargeError(static_cast<int64_t>(width), static_cast<int64_t>(height), max_pixels);
    }
  }
  PngDecoder decoder;
  decoder.data = data;
  decoder.size = bytes.size();
  Image image;
  switch (DecodePngGuarded(&decoder, limits, &image)) {
    case DecodeOutcome::kOk:
      return image;
    case DecodeOutcome::kTooLarge:
      return TooLargeError(image.width, image.height, max_pixels);
    case DecodeOutcome::kOverBudget:
      return decoder.budget_status;
    case DecodeOutcome::kTooManyScans:
    case DecodeOutcome::kFailed:
      break;
  }
  return absl::InvalidArgumentError(absl::StrCat("corrupt or truncated PNG: ", decoder.message));
}

}  // namespace

ImageFormat SniffImageFormat(absl::string_view bytes) {
  auto starts_with = [&](absl::string_view magic, size_t at = 0) {
    return bytes.size() >= at + magic.size() && bytes.substr(at, magic.size()) == magic;
  };
  if (starts_with("\xFF\xD8\xFF")) return ImageFormat::kJpeg;
  if (starts_with("\x89PNG\r\n\x1A\n")) return ImageFormat::kPng;
  if (starts_with("GIF87a") || starts_with("GIF89a")) return ImageFormat::kGif;
  if (starts_with("RIFF") && starts_with("WEBP", 8)) return ImageFormat::kWebp;
  if (starts_with(absl::string_view("II*\0", 4)) || starts_with(absl::string_view("MM\0*", 4))) {
    return ImageFormat::kTiff;
  }
  if (starts_with("BM")) return ImageFormat::kBmp;
  return ImageFormat::kUnknown;
}

absl::string_view ImageFormatName(ImageFormat format) {
  switch (format) {
    case ImageFormat::kJpeg:
      return "JPEG";
    case ImageFormat::kPng:
      return "PNG";
    case ImageFormat::kGif:
      return "GIF";
    case ImageFormat::kBmp:
      return "BMP";
    case ImageFormat::kWebp:
      return "WebP";
    case ImageFormat::kTiff:
      return "TIFF";
    case ImageFormat::kUnknown:
      break;
  }
  return "unknown";
}

absl::StatusOr<Image> DecodeImage(absl::string_view bytes, int64_t max_pixels) {
  DecodeLimits limits;
  limits.max_pixels = max_pixels;
  return DecodeImage(bytes, limits);
}

absl::StatusOr<Image> DecodeImage(absl::string_view bytes, const DecodeLimits& limits) {
  const ImageFormat format = SniffImageFormat(bytes);
  switch (format) {
    case ImageFormat::kJpeg:
      return DecodeJpeg(bytes, limits);
    case ImageFormat::kPng:
      return DecodePng(bytes, limits);
    case ImageFormat::kGif:
    case ImageFormat::kBmp:
    case ImageFormat::kWebp:
    case ImageFormat::kTiff:
      return absl::FailedPreconditionError(absl::StrCat(
          "unsupported image format ", ImageFormatName(format), "; supported: JPEG, PNG"));
    case ImageFormat::kUnknown:
      break;
  }
  if (bytes.empty()) return absl::InvalidArgumentError("empty file (0 bytes)");
  std::string head;
  for (size_t i = 0; i < bytes.size() && i < 4; ++i) {
    absl::StrAppendFormat(&head, "%02x", static_cast<uint8_t>(bytes[i]));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("not a JPEG or PNG file (it starts with bytes 0x", head, ")"));
}

}  // namespace kaizen::datasets
