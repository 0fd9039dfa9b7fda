// Turns an uploaded table of labelled text (CSV, TSV or JSON Lines, plain or
// gzip-compressed) into a record file of text records, with the summary and
// report the user sees: counts per class, text lengths, rows kept out with
// their line numbers, empty and duplicate rows.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kaizen/v1/dataset_service.pb.h"
#include "server/datasets/ingest_options.h"
#include "server/datasets/text_table.h"

namespace kaizen::datasets {

// Reads `path` (named `display_name` in messages) as `table` says and stores
// the usable rows at `record_path` (nothing is left there on error). The
// classes are `class_names` when given (a row with another label is kept
// out), else the labels found, sorted (by value when all are integers).
// Rows over options.max_text_row_bytes, not UTF-8, malformed, or without a
// text or a usable label are kept out and listed; empty texts are counted
// and kept out. InvalidArgument for a file that cannot be read (see
// TextTableReader), without usable rows, or with fewer than two classes;
// ResourceExhausted past options.max_examples rows or the decode budget
// (decompressed bytes).
// Returns the summary: num_examples, classes, stored_bytes and report (no
// input_shape: the tokenizer decides a text's shape).
absl::StatusOr<kaizen::v1::Dataset> IngestTextTable(const std::string& path,
                                                    const std::string& display_name,
                                                    const TextTableOptions& table,
                                                    const std::vector<std::string>& class_names,
                                                    const IngestOptions& options,
                                                    const std::string& record_path);

}  // namespace kaizen::datasets
