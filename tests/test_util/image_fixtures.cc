#include "tests/test_util/image_fixtures.h"

// clang-format off
#include <cstdio>  // jpeglib.h needs FILE and size_t first
#include <jpeglib.h>
// clang-format on
#include <archive.h>
#include <archive_entry.h>
#include <png.h>

#include <algorithm>
#include <csetjmp>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>

#include "gtest/gtest.h"

namespace kaizen::test_util {
namespace {

// Fixture encoders never see bad input, so a libjpeg/libpng error is a bug in
// the test: fail loudly rather than longjmp.
void JpegFatal(j_common_ptr cinfo) {
  char message[JMSG_LENGTH_MAX];
  (*cinfo->err->format_message)(cinfo, message);
  std::fprintf(stderr, "EncodeJpeg: libjpeg error: %s\n", message);
  std::abort();
}

void PngFatal(png_structp, png_const_charp message) {
  std::fprintf(stderr, "EncodePng: libpng error: %s\n", message);
  std::abort();
}

void PngAppend(png_structp png, png_bytep data, png_size_t size) {
  static_cast<std::string*>(png_get_io_ptr(png))->append(reinterpret_cast<const char*>(data), size);
}

void PngFlush(png_structp) {}

la_ssize_t ArchiveAppend(archive*, void* out, const void* data, size_t size) {
  static_cast<std::string*>(out)->append(static_cast<const char*>(data), size);
  return static_cast<la_ssize_t>(size);
}

}  // namespace

std::vector<uint8_t> MakePixels(int width, int height, int channels, uint32_t seed) {
  std::vector<uint8_t> pixels(static_cast<size_t>(width) * height * channels);
  uint32_t state = seed * 2654435761u + 12345u;
  size_t i = 0;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      for (int c = 0; c < channels; ++c) {
        state = state * 1664525u + 1013904223u;  // LCG
        // Smooth gradients (a different direction per channel) survive JPEG's
        // chroma subsampling; the small noise makes every seed distinct.
        int base;
        switch (c % 3) {
          case 0:
            base = x * 200 / std::max(1, width - 1);
            break;
          case 1:
            base = y * 200 / std::max(1, height - 1);
            break;
          default:
            base = (x + y) * 200 / std::max(1, width + height - 2);
            break;
        }
        base += static_cast<int>((seed * 37u) % 48u);
        const int noise = static_cast<int>((state >> 24) & 0x0f) - 8;
        pixels[i++] = static_cast<uint8_t>(std::min(255, std::max(0, base + noise)));
      }
    }
  }
  return pixels;
}

std::string EncodeJpeg(int width, int height, int channels, uint32_t seed, int quality) {
  if (channels != 1 && channels != 3) {
    ADD_FAILURE() << "EncodeJpeg: channels must be 1 or 3, got " << channels;
    return "";
  }
  return EncodeJpegPixels(MakePixels(width, height, channels, seed), width, height, channels,
                          quality);
}

std::string EncodeJpegPixels(const std::vector<uint8_t>& pixels, int width, int height,
                             int channels, int quality) {
  if ((channels != 1 && channels != 3) ||
      pixels.size() != static_cast<size_t>(width) * height * channels) {
    ADD_FAILURE() << "EncodeJpegPixels: " << pixels.size() << " bytes for " << width << "x"
                  << height << "x" << channels;
    return "";
  }
  jpeg_compress_struct cinfo;
  jpeg_error_mgr err;
  cinfo.err = jpeg_std_error(&err);
  err.error_exit = JpegFatal;
  jpeg_create_compress(&cinfo);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;  // NOLINT(runtime/int): libjpeg's type
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = static_cast<JDIMENSION>(width);
  cinfo.image_height = static_cast<JDIMENSION>(height);
  cinfo.input_components = channels;
  cinfo.in_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(pixels.data()) +
                   static_cast<size_t>(cinfo.next_scanline) * width * channels;
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::string out(reinterpret_cast<const char*>(buffer), size);
  std::free(buffer);
  return out;
}

std::string ExifOrientationPayload(int orientation, bool big_endian) {
  std::string out("Exif\0\0", 6);
  auto put16 = [&](uint32_t v) {
    const char hi = static_cast<char>((v >> 8) & 0xff), lo = static_cast<char>(v & 0xff);
    out += big_endian ? std::string{hi, lo} : std::string{lo, hi};
  };
  auto put32 = [&](uint32_t v) {
    if (big_endian) {
      put16(v >> 16), put16(v & 0xffff);
    } else {
      put16(v & 0xffff), put16(v >> 16);
    }
  };
  out += big_endian ? "MM" : "II";
  put16(42);                                  // TIFF magic
  put32(8);                                   // IFD0 right after the 8-byte header
  put16(1);                                   // one entry
  put16(0x0112);                              // Orientation
  put16(3);                                   // SHORT
  put32(1);                                   // count
  put16(static_cast<uint32_t>(orientation));  // value, left-justified in 4 bytes
  put16(0);
  put32(0);  // no next IFD
  return out;
}

std::string InsertJpegApp1(const std::string& jpeg, const std::string& payload) {
  if (jpeg.size() < 2 || jpeg.compare(0, 2, "\xFF\xD8") != 0 || payload.size() > 65533) {
    ADD_FAILURE() << "InsertJpegApp1: not a JPEG, or a payload over 64 KiB";
    return "";
  }
  const size_t length = payload.size() + 2;  // the length field counts itself
  std::string segment("\xFF\xE1", 2);
  segment += static_cast<char>(length >> 8);
  segment += static_cast<char>(length & 0xff);
  segment += payload;
  return jpeg.substr(0, 2) + segment + jpeg.substr(2);
}

std::string InsertExifOrientation(const std::string& jpeg, int orientation, bool big_endian) {
  return InsertJpegApp1(jpeg, ExifOrientationPayload(orientation, big_endian));
}

std::string EncodePng(int width, int height, int channels, uint32_t seed) {
  return EncodePngPixels(MakePixels(width, height, channels, seed), width, height, channels);
}

std::string EncodePngPixels(const std::vector<uint8_t>& pixels, int width, int height,
                            int channels) {
  static constexpr int kColorTypes[] = {PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA,
                                        PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA};
  if (channels < 1 || channels > 4 ||
      pixels.size() != static_cast<size_t>(width) * height * channels) {
    ADD_FAILURE() << "EncodePngPixels: " << pixels.size() << " bytes for " << width << "x" << height
                  << "x" << channels << " (channels must be 1..4)";
    return "";
  }
  std::string out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, PngFatal, nullptr);
  png_infop info = png_create_info_struct(png);
  png_set_write_fn(png, &out, PngAppend, PngFlush);
  png_set_IHDR(png, info, static_cast<png_uint_32>(width), static_cast<png_uint_32>(height), 8,
               kColorTypes[channels - 1], PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int y = 0; y < height; ++y) {
    png_write_row(png, pixels.data() + static_cast<size_t>(y) * width * channels);
  }
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

std::string EncodeManyScanJpeg(int width, int height, int levels) {
  jpeg_compress_struct cinfo;
  jpeg_error_mgr jerr;
  cinfo.err = jpeg_std_error(&jerr);
  jerr.error_exit = JpegFatal;
  jpeg_create_compress(&cinfo);
  unsigned char* out = nullptr;
  unsigned long size = 0;  // NOLINT(runtime/int): libjpeg's type
  jpeg_mem_dest(&cinfo, &out, &size);
  cinfo.image_width = static_cast<JDIMENSION>(width);
  cinfo.image_height = static_cast<JDIMENSION>(height);
  cinfo.input_components = 1;
  cinfo.in_color_space = JCS_GRAYSCALE;
  jpeg_set_defaults(&cinfo);
  // Every coefficient (DC and the 63 AC) in a band of its own, each refined
  // in `levels` successive-approximation scans: valid, and 64 * levels scans.
  std::vector<jpeg_scan_info> scans;
  for (int k = 0; k <= 63; ++k) {
    for (int al = levels - 1; al >= 0; --al) {
      jpeg_scan_info scan = {};
      scan.comps_in_scan = 1;
      scan.component_index[0] = 0;
      scan.Ss = k;
      scan.Se = k;
      scan.Ah = al == levels - 1 ? 0 : al + 1;
      scan.Al = al;
      scans.push_back(scan);
    }
  }
  cinfo.scan_info = scans.data();
  cinfo.num_scans = static_cast<int>(scans.size());
  jpeg_start_compress(&cinfo, TRUE);
  const std::vector<uint8_t> pixels = MakePixels(width, height, 1, 7);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(pixels.data()) + cinfo.next_scanline * width;
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::string jpeg(reinterpret_cast<const char*>(out), size);
  std::free(out);
  return jpeg;
}

std::string EncodeFlatPng(int width, int height) {
  std::string out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, PngFatal, nullptr);
  png_infop info = png_create_info_struct(png);
  png_set_write_fn(png, &out, PngAppend, PngFlush);
  png_set_compression_level(png, 9);
  png_set_IHDR(png, info, static_cast<png_uint_32>(width), static_cast<png_uint_32>(height), 8,
               PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  const std::vector<uint8_t> row(static_cast<size_t>(width) * 3, 0x80);
  for (int y = 0; y < height; ++y) png_write_row(png, row.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

std::string MakeArchive(const std::vector<ArchiveEntry>& entries, ArchiveKind kind) {
  std::string out;
  archive* a = archive_write_new();
  int r = ARCHIVE_OK;
  switch (kind) {
    case ArchiveKind::kTar:
      r = archive_write_set_format_pax_restricted(a);
      break;
    case ArchiveKind::kTarGz:
      r = archive_write_set_format_pax_restricted(a);
      if (r == ARCHIVE_OK) r = archive_write_add_filter_gzip(a);
      break;
    case ArchiveKind::kTarBz2:
      r = archive_write_set_format_pax_restricted(a);
      if (r == ARCHIVE_OK) r = archive_write_add_filter_bzip2(a);
      break;
    case ArchiveKind::kTarXz:
      r = archive_write_set_format_pax_restricted(a);
      if (r == ARCHIVE_OK) r = archive_write_add_filter_xz(a);
      break;
    case ArchiveKind::kZip:
      r = archive_write_set_format_zip(a);
      break;
  }
  // No padding to 10 KiB blocks: archives from real clients end where their
  // data ends.
  if (r == ARCHIVE_OK) r = archive_write_set_bytes_in_last_block(a, 1);
  if (r == ARCHIVE_OK) r = archive_write_open(a, &out, nullptr, ArchiveAppend, nullptr);
  for (size_t i = 0; r == ARCHIVE_OK && i < entries.size(); ++i) {
    const ArchiveEntry& e = entries[i];
    archive_entry* entry = archive_entry_new();
    archive_entry_set_pathname(entry, e.path.c_str());
    archive_entry_set_filetype(entry, e.is_dir ? AE_IFDIR : AE_IFREG);
    archive_entry_set_perm(entry, e.is_dir ? 0755 : 0644);
    archive_entry_set_size(entry, e.is_dir ? 0 : static_cast<la_int64_t>(e.data.size()));
    archive_entry_set_mtime(entry, 1700000000, 0);
    r = archive_write_header(a, entry);
    // A name that is not UTF-8 is written as raw bytes with a warning, as
    // archives from other systems carry them (e.g. Latin-1 folder names).
    if (r == ARCHIVE_WARN) r = ARCHIVE_OK;
    if (r == ARCHIVE_OK && !e.is_dir && !e.data.empty() &&
        archive_write_data(a, e.data.data(), e.data.size()) !=
            static_cast<la_ssize_t>(e.data.size())) {
      r = ARCHIVE_FATAL;
    }
    archive_entry_free(entry);
  }
  if (r == ARCHIVE_OK) r = archive_write_close(a);
  if (r != ARCHIVE_OK) {
    ADD_FAILURE() << "MakeArchive: " << (archive_error_string(a) ? archive_error_string(a) : "?");
    out.clear();
  }
  archive_write_free(a);
  return out;
}

void WriteBinaryFile(const std::string& path, const std::string& data) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file.write(data.data(), static_cast<std::streamsize>(data.size()));
  file.close();
  if (!file) ADD_FAILURE() << "WriteBinaryFile: cannot write " << path;
}

std::string ReadBinaryFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    ADD_FAILURE() << "ReadBinaryFile: cannot open " << path;
    return "";
  }
  return std::string(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
}

}  // namespace kaizen::test_util
