// Turns an uploaded MNIST-style IDX pair into a DecodedDataset plus the
// summary and report the user sees. Header fields are checked against the
// limits before anything is read or allocated.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/datasets/gzip_reader.h"
#include "server/datasets/ingest_options.h"

namespace kaizen::datasets {

// One file of an IDX pair.
struct IdxFile {
  std::string path;
  // Names the file in messages: the uploaded file's name.
  std::string display_name;
  // Set while another thread still writes the file (an upload being
  // received): reads wait for it (GzipReader::Growing).
  GzipReader::Growing growing;
  // The complete file's size, part of the decode budget's base; 0: its size
  // on disk.
  int64_t size_bytes = 0;
};

// Reads an IDX pair (MNIST / Fashion-MNIST): images idx3-ubyte (magic
// 0x00000803) and labels idx1-ubyte (magic 0x00000801), each plain or gzip.
// The images are read whole before the labels (the order an upload sends
// them in, so that they decode while the labels arrive). Empty
// `class_names` names the labels "0".."<max label>"; otherwise it must name
// every label that occurs. Errors are InvalidArgument naming the file (and
// the header field, for a dimension over its bound or sizes whose product
// overflows); ResourceExhausted when the payload the images header declares
// passes the decode budget, before anything is read or allocated.
//
// `before_storing`, when set, runs once both files are decoded and checked,
// before the duplicate report and the record file; an error from it ends the
// ingest with that error (an upload waits there for its SHA-256 verdict).
//
// With `record_path`, the images are also stored there as a record file
// (summary.stored_bytes set), written on a second thread while this one
// looks for duplicate images; nothing is written unless decoding and every
// check succeeded.
absl::StatusOr<IngestResult> IngestIdx(
    const IdxFile& images, const IdxFile& labels, const std::vector<std::string>& class_names,
    const IngestOptions& options, const std::string& record_path = "",
    const std::function<absl::Status()>& before_storing = nullptr);

// The same for two complete files.
absl::StatusOr<IngestResult> IngestIdx(const std::string& images_path,
                                       const std::string& labels_path,
                                       const std::vector<std::string>& class_names,
                                       const std::string& images_display_name,
                                       const std::string& labels_display_name,
                                       const IngestOptions& options,
                                       const std::string& record_path = "");

}  // namespace kaizen::datasets
