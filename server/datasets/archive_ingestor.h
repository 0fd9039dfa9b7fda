// Turns an uploaded image-folder archive into a record file plus the summary
// and report the user sees: what was used, what was skipped and why,
// and what looks wrong. Problems that make the data unusable are errors whose
// message names the file; problems with single images are reported, not
// fatal.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "server/datasets/ingest_options.h"

namespace kaizen::datasets {

// Reads a tar (plain, gzip, bzip2 or xz) or zip archive of
// `class_name/*.{jpg,jpeg,png}` (extensions case-insensitive), detected from
// the bytes. One top-level folder above the class folders is stripped. Labels
// follow the sorted class names. Records are ordered by label, then path.
// Images stream into a record file at `record_path` as they are read (the
// upload is never held in memory, decoded or not): each image's file bytes as
// uploaded, or its decoded pixels when those are no larger (tiny images);
// the file appears only when ingestion succeeds. Returns the summary:
// num_examples, classes (ordered by label), input_shape [C, H, W],
// stored_bytes and report; the caller fills name, sha256, sizes and times.
// `display_name` (e.g. the client's file name) prefixes error messages.
// Errors are InvalidArgument: not an archive, truncated or corrupt archive,
// empty archive, no usable images, fewer than two classes, an image in an
// unsupported format, over max_image_pixels or with more than max_jpeg_scans
// scans, more than max_examples images. ResourceExhausted when the decoded
// bytes (decompressed layers, skipped members included, and pixels) pass the
// decode budget; decoding stops there. Internal when the record file cannot
// be written.
absl::StatusOr<kaizen::v1::Dataset> IngestImageFolderArchive(const std::string& archive_path,
                                                             const std::string& display_name,
                                                             const IngestOptions& options,
                                                             const std::string& record_path);

}  // namespace kaizen::datasets
