// Layout of the data directory and its start-up hygiene:
//   kaizen.db        the SQLite catalogue (WAL), unless --database names PostgreSQL
//   tmp/             uploads in progress; emptied at start-up
//   datasets/*.krf   dataset record files (*.kds: decoded stores written before them, still read)
//   models/NAME/*.pt model versions
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/store/metadata_store.h"

namespace kaizen::store {

// Creates the folders and empties tmp/ (left-overs of uploads that a crash
// interrupted). Entries younger than `min_age` stay: with several replicas on
// one data directory, they may be another replica's uploads in progress.
absl::Status PrepareDataDir(const std::string& data_dir,
                            absl::Duration min_age = absl::ZeroDuration());

// Removes files under datasets/ and models/ that no catalogue row references:
// a crash between writing a file and inserting its row, or between deleting a
// row and unlinking its file, leaves such orphans. Files younger than
// `min_age` stay (another replica may be about to insert their row). Returns
// how many were removed.
absl::StatusOr<int> SweepOrphanFiles(const std::string& data_dir, MetadataStore& metadata,
                                     absl::Duration min_age = absl::ZeroDuration());

}  // namespace kaizen::store
