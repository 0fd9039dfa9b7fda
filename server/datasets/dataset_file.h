// The compact decoded store of one dataset: every image as HWC uint8 pixels
// with its label, decoded once at upload so that training never touches JPEG
// or PNG again. One file per dataset, written atomically.
//
// Layout (all integers little-endian):
//   "KZDS"  u32 version (1)  u32 num_classes  u64 num_records  u64 pixel_bytes
//   num_classes x { u32 length, bytes }                      class names
//   num_records x { i32 label, i32 height, i32 width, i32 channels, i64 offset }
//   pixel_bytes bytes of pixels
//   u32 CRC-32 (zlib) of everything above
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/common/huge_pages.h"

namespace kaizen::datasets {

// Decoded pixels: large, written once and read many times, so on huge pages
// where the kernel offers them (server/common/huge_pages.h).
using PixelBuffer = std::vector<uint8_t, common::HugePageAllocator<uint8_t>>;

struct DecodedDataset {
  struct Record {
    int32_t label = 0;
    int32_t height = 0;
    int32_t width = 0;
    int32_t channels = 0;
    int64_t offset = 0;  // into `pixels`; the image is height*width*channels bytes
  };
  std::vector<std::string> class_names;  // index = label
  std::vector<Record> records;
  PixelBuffer pixels;  // all images, HWC uint8, concatenated
};

// Writes `data` to `path` (temporary file, fsync, rename). Returns the number
// of bytes written. InvalidArgument if a record does not fit in `pixels` or
// has a label without a class name.
absl::StatusOr<int64_t> WriteDatasetFile(const std::string& path, const DecodedDataset& data);

// NotFound if `path` does not exist; DataLoss if the file is damaged (bad
// magic, unknown version, inconsistent sizes or records, checksum mismatch).
absl::StatusOr<DecodedDataset> ReadDatasetFile(const std::string& path);

}  // namespace kaizen::datasets
