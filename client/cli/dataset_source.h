// Works out what `kaizenctl datasets upload NAME PATH` sends: a folder to
// archive on the fly, an archive as it is, or an IDX images/labels pair.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kaizen/v1/dataset_service.pb.h"

namespace kaizen::cli {

struct DatasetSource {
  kaizen::v1::DatasetFormat format = kaizen::v1::DATASET_FORMAT_UNSPECIFIED;
  // Set for a folder: it must be archived first and the archive uploaded.
  std::string folder;
  // Otherwise the files to upload as they are, in part order.
  std::vector<std::string> files;
};

// `format` is "auto", "folder", "idx", "csv", "tsv" or "jsonl" (under
// "auto", a name ending in .csv, .tsv, .jsonl or .ndjson, optionally .gz,
// is a text table); `labels` is the --labels flag (IDX
// only; by default the labels file is found beside the images file by
// replacing "images-idx3" with "labels-idx1", with or without ".gz").
absl::StatusOr<DatasetSource> ResolveDatasetSource(const std::string& path,
                                                   const std::string& format,
                                                   const std::string& labels);

// True for names ending in .tar, .tar.gz, .tgz, .zip, .tar.bz2, .tbz2,
// .tar.xz or .txz (any case).
bool IsArchiveName(const std::string& path);

}  // namespace kaizen::cli
