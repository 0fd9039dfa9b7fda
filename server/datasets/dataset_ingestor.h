// Turns an uploaded image-folder archive or MNIST-style IDX pair into a
// DecodedDataset plus the summary and report the user sees: what was used,
// what was skipped and why, and what looks wrong (imbalance, mixed sizes,
// duplicates). Problems that make the data unusable are errors whose message
// names the file; problems with single images are reported, not fatal.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kaizen/v1/dataset_service.pb.h"
#include "server/datasets/dataset_file.h"
#include "server/datasets/decode_budget.h"

namespace kaizen::datasets {

struct IngestOptions {
  // Largest image accepted, width * height.
  int64_t max_image_pixels = 25'000'000;
  // Most images accepted in one dataset.
  int64_t max_examples = 5'000'000;
  // Cap on listed failed files / duplicates / ignored files in the report
  // (all are counted; only this many are kept in memory and listed).
  int max_listed = 100;
  // Most scans in one progressive JPEG (see DecodeLimits).
  int max_jpeg_scans = 100;
  // Decoded bytes one upload may produce: decompression layers (gzip, bzip2,
  // xz, zip members), IDX payloads and decoded pixels. The ratio is taken
  // to the size of the uploaded files.
  DecodeBudget::Options budget;
};

struct IngestResult {
  DecodedDataset data;
  // num_examples, classes (ordered by label), input_shape [C, H, W] and
  // report are filled; the caller fills name, sha256, sizes and times.
  kaizen::v1::Dataset summary;
};

// Reads a tar (plain, gzip, bzip2 or xz) or zip archive of
// `class_name/*.{jpg,jpeg,png}` (extensions case-insensitive), detected from
// the bytes. One top-level folder above the class folders is stripped. Labels
// follow the sorted class names. Records are ordered by label, then path.
// `display_name` (e.g. the client's file name) prefixes error messages.
// Errors are InvalidArgument: not an archive, truncated or corrupt archive,
// empty archive, no usable images, fewer than two classes, an image in an
// unsupported format, over max_image_pixels or with more than max_jpeg_scans
// scans, more than max_examples images. ResourceExhausted when the decoded
// bytes (decompressed layers, skipped members included, and pixels) pass the
// decode budget; decoding stops there.
absl::StatusOr<IngestResult> IngestImageFolderArchive(const std::string& archive_path,
                                                      const std::string& display_name,
                                                      const IngestOptions& options);

// Reads an IDX pair (MNIST / Fashion-MNIST): images idx3-ubyte (magic
// 0x00000803) and labels idx1-ubyte (magic 0x00000801), each plain or gzip.
// Empty `class_names` names the labels "0".."<max label>"; otherwise it must
// name every label that occurs. Errors are InvalidArgument naming the file
// (and the header field, for a dimension over its bound or sizes whose
// product overflows); ResourceExhausted when the payload the header declares
// passes the decode budget, before anything is read or allocated.
absl::StatusOr<IngestResult> IngestIdx(const std::string& images_path,
                                       const std::string& labels_path,
                                       const std::vector<std::string>& class_names,
                                       const std::string& images_display_name,
                                       const std::string& labels_display_name,
                                       const IngestOptions& options);

}  // namespace kaizen::datasets
