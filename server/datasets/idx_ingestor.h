// Turns an uploaded MNIST-style IDX pair into a DecodedDataset plus the
// summary and report the user sees. Header fields are checked against the
// limits before anything is read or allocated.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/datasets/ingest_options.h"

namespace kaizen::datasets {

// Reads an IDX pair (MNIST / Fashion-MNIST): images idx3-ubyte (magic
// 0x00000803) and labels idx1-ubyte (magic 0x00000801), each plain or gzip.
// Empty `class_names` names the labels "0".."<max label>"; otherwise it must
// name every label that occurs. Errors are InvalidArgument naming the file
// (and the header field, for a dimension over its bound or sizes whose
// product overflows); ResourceExhausted when the payload the header declares
// passes the decode budget, before anything is read or allocated.
//
// With `record_path`, the images are also stored there as a record file
// (summary.stored_bytes set), written on a second thread while this one
// looks for duplicate images; nothing is written unless decoding and every
// check succeeded.
absl::StatusOr<IngestResult> IngestIdx(const std::string& images_path,
                                       const std::string& labels_path,
                                       const std::vector<std::string>& class_names,
                                       const std::string& images_display_name,
                                       const std::string& labels_display_name,
                                       const IngestOptions& options,
                                       const std::string& record_path = "");

}  // namespace kaizen::datasets
