// Packs a local folder into a tar file so that it can be uploaded as one
// IMAGE_FOLDER dataset part ("archived on the fly").
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace kaizen::client {

// Writes a tar (ustar, pax extensions where a name needs them) of the regular
// files below `dir` to `out_tar_path`. Entry names are relative to `dir`
// ("cats/a.jpg") and sorted, so the same folder always gives the same bytes
// apart from modification times. A symbolic link to a file inside `dir` is
// archived as that file; a link that leads out of `dir` is skipped, so that
// a folder cannot smuggle in files from elsewhere (~/.ssh, /etc), and a
// warning naming the link and its target is appended to `warnings` (when
// given). Links to folders, sockets and the like are left out. Hidden files
// are kept: the server decides what to ignore and reports it.
absl::Status ArchiveFolder(const std::string& dir, const std::string& out_tar_path,
                           std::vector<std::string>* warnings = nullptr);

}  // namespace kaizen::client
