// Packs a local folder into a tar file so that it can be uploaded as one
// IMAGE_FOLDER dataset part ("archived on the fly").
#pragma once

#include <string>

#include "absl/status/status.h"

namespace kaizen::client {

// Writes a tar (ustar, pax extensions where a name needs them) of the regular
// files below `dir` to `out_tar_path`. Entry names are relative to `dir`
// ("cats/a.jpg") and sorted, so the same folder always gives the same bytes
// apart from modification times. Symbolic links to files are followed;
// symbolic links to folders, sockets and the like are left out. Hidden files
// are kept: the server decides what to ignore and reports it.
absl::Status ArchiveFolder(const std::string& dir,
                           const std::string& out_tar_path);

}  // namespace kaizen::client
