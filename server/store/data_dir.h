// Layout of the data directory and its start-up hygiene:
//   kaizen.db        the SQLite catalogue (WAL)
//   tmp/             uploads in progress; emptied at start-up
//   datasets/*.krf   dataset record files (*.kds: decoded stores written before them, still read)
//   models/NAME/*.pt model versions
#pragma once

#include <string>

#include "absl/status/status.h"
#include "server/store/metadata_store.h"

namespace kaizen::store {

// Creates the folders and empties tmp/ (left-overs of uploads that a crash
// interrupted).
absl::Status PrepareDataDir(const std::string& data_dir);

// Removes files under datasets/ and models/ that no catalogue row references:
// a crash between writing a file and inserting its row, or between deleting a
// row and unlinking its file, leaves such orphans. Returns how many were removed.
absl::StatusOr<int> SweepOrphanFiles(const std::string& data_dir, MetadataStore& metadata);

}  // namespace kaizen::store
