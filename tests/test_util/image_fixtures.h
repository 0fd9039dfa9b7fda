// Builders for test inputs: encoded JPEG/PNG images with known, seed-derived
// pixels, and tar / tar.gz / zip archives written in memory with libarchive.
// Failures are reported with ADD_FAILURE and yield an empty string.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kaizen::test_util {

// The deterministic pixels the encoders use: HWC, `channels` 1..4, a smooth
// pattern plus seed-dependent noise, so different seeds give different images.
std::vector<uint8_t> MakePixels(int width, int height, int channels, uint32_t seed);

// JPEG of MakePixels(width, height, channels, seed); channels 1 or 3.
std::string EncodeJpeg(int width, int height, int channels, uint32_t seed, int quality = 90);

// JPEG of the given HWC pixels; channels 1 or 3.
std::string EncodeJpegPixels(const std::vector<uint8_t>& pixels, int width, int height,
                             int channels, int quality = 95);

// An EXIF APP1 payload as cameras write it: "Exif\0\0", a TIFF header
// (little-endian "II" or big-endian "MM") and IFD0 holding one Orientation
// entry (tag 0x0112, SHORT, count 1) of `orientation` (any value, 0..65535).
std::string ExifOrientationPayload(int orientation, bool big_endian = false);

// `jpeg` with an APP1 marker holding `payload` (under 64 KiB) right after SOI.
std::string InsertJpegApp1(const std::string& jpeg, const std::string& payload);

// `jpeg` with an EXIF APP1 of Orientation `orientation` right after SOI.
std::string InsertExifOrientation(const std::string& jpeg, int orientation,
                                  bool big_endian = false);

// Lossless PNG of MakePixels(width, height, channels, seed); channels 1 (grey),
// 2 (grey + alpha), 3 (RGB) or 4 (RGBA).
std::string EncodePng(int width, int height, int channels, uint32_t seed);
// The same for given pixels (row-major, width * height * channels bytes).
std::string EncodePngPixels(const std::vector<uint8_t>& pixels, int width, int height,
                            int channels);

// A valid grey progressive JPEG with 64 * levels scans (levels 1..11): each
// coefficient in a band of its own, refined in `levels` steps. Real encoders
// write about 10 scans; hundreds make a small file cost a pass per scan.
std::string EncodeManyScanJpeg(int width, int height, int levels);

// An RGB PNG of one flat colour: compresses about 1000:1, so a small file
// decodes to width * height * 3 bytes (a decode-budget test input).
std::string EncodeFlatPng(int width, int height);

struct ArchiveEntry {
  std::string path;
  std::string data;
  bool is_dir = false;
};

enum class ArchiveKind { kTar, kTarGz, kTarBz2, kTarXz, kZip };

// The entries, in order, as an archive of `kind`.
std::string MakeArchive(const std::vector<ArchiveEntry>& entries, ArchiveKind kind);

// Writes `data` to `path`, replacing it.
void WriteBinaryFile(const std::string& path, const std::string& data);

// Reads a whole file ("" and a test failure if it cannot be read).
std::string ReadBinaryFile(const std::string& path);

}  // namespace kaizen::test_util
